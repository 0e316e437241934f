import ESFTKernels
import ESFTStore
import ESFTTestSupport
import Foundation
import XCTest

/// `--placement contiguous|balanced|affinity` on 3 ranks (real mpirun): the placement decides only which
/// rank computes an expert. An expert still receives the same rows in the same order (grouped by source
/// rank, token order within), so its GEMMs and weight gradients see the same operands; what changes is
/// how a token's K = 4 expert outputs are grouped into per-rank rows before they are summed (forward
/// combine, and ∂x in backward), and how the grad-norm's sum of squares is split over ranks. Regrouping
/// a sum of ≤ K terms moves it by ≤ (K−1)·u relative (u = 2⁻²⁴), less than changing the rank count does
/// (TrainEquivalenceTests: every rank-local GEMM and reduction changes length there). So the bounds
/// derived in TrainEquivalenceTests apply: losses within 1e-6 relative, weights within 0.05·lr per step.
final class PlacementTrainingTests: TrainTestCase {
    override class var tag: String { "placement" }
    static let lr = 1e-4, steps = 6

    /// Routing logs for the tiny model (layers 1–2, 16 experts, top-4) whose tokens choose within
    /// planted groups {g, g+4, g+8, g+12}: affinity puts groups together, unlike contiguous blocks.
    func writeRoutingLogs() throws -> URL {
        let logs = dir.appendingPathComponent("routing")
        try FileManager.default.createDirectory(at: logs, withIntermediateDirectories: true)
        var rng = SplitMix64(seed: 9)
        for layer in [1, 2] {
            var text = ""
            for _ in 0..<20 {
                var ids: [String] = [], weights: [String] = []
                for t in 0..<30 {
                    let g = (t + layer) % 4
                    for e in [g, g + 4, g + 8, g + 12].shuffled(using: &rng) { ids.append("\(e)"); weights.append("0.2") }
                }
                text += ids.joined(separator: "\t") + "\t\t" + weights.joined(separator: "\t") + "\n"
            }
            try Data(text.utf8).write(to: logs.appendingPathComponent("expert_weights_\(layer).txt"))
        }
        return logs
    }

    func summary(_ run: Run) throws -> [String: Any] {
        try JSONSerialization.jsonObject(with: Data(contentsOf: run.out.appendingPathComponent("summary.json"))) as! [String: Any]
    }

    func testTrainingDoesNotDependOnPlacement() throws {
        let logs = try writeRoutingLogs()
        let esft = ["--experts", path("experts.json")]
        let base = try train(ranks: 3, esft, tag: "contiguous", steps: Self.steps)
        let baseLoss = try metrics(base.out).map { $0["loss"] as! Double }, baseTensors = try trained(base)
        let baseOwners = try summary(base)["expertOwners"] as! [String: [Int]]
        XCTAssertEqual(try summary(base)["placement"] as? String, "contiguous")
        XCTAssertEqual(baseOwners["1"], [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2], "contiguous blocks of 6, 5, 5")
        let bound = 0.05 * Self.lr * Double(Self.steps)
        for (kind, extra) in [("balanced", ["--placement", "balanced"]),
                              ("affinity", ["--placement", "affinity", "--placement-routing", logs.path])] {
            let run = try train(ranks: 3, esft, tag: kind, steps: Self.steps, extra: extra)
            let s = try summary(run)
            XCTAssertEqual(s["placement"] as? String, kind)
            let owners = try XCTUnwrap(s["expertOwners"] as? [String: [Int]])
            XCTAssertNotEqual(owners, baseOwners, "\(kind): another expert map")
            for (_, o) in owners { XCTAssertEqual([0, 1, 2].map { r in o.filter { $0 == r }.count }, [6, 5, 5], "\(kind): contiguous counts per rank") }
            if kind == "balanced" {
                // Layer 1 trains experts 0, 5, 13: contiguous gives ranks 2, 0, 1 of them; balanced one each.
                XCTAssertEqual(Set([0, 5, 13].map { owners["1"]![$0] }), [0, 1, 2])
            } else {
                // The planted groups {g, g+4, g+8, g+12}: contiguous blocks split every one over 3 ranks;
                // with capacities 6, 5, 5 three groups fit whole on a rank (the fourth is split).
                let whole = (0..<4).filter { g in Set([g, g + 4, g + 8, g + 12].map { owners["1"]![$0] }).count == 1 }
                XCTAssertGreaterThanOrEqual(whole.count, 2, "affinity keeps planted groups together: \(owners["1"]!)")
            }
            let loss = try metrics(run.out).map { $0["loss"] as! Double }
            XCTAssertEqual(loss.count, Self.steps)
            for (i, (a, b)) in zip(baseLoss, loss).enumerated() {
                XCTAssertLessThanOrEqual(abs(a - b) / a, 1e-6, "\(kind), step \(i + 1): loss \(b) vs \(a)")
            }
            let t = try trained(run)
            XCTAssertEqual(Set(t.keys), Set(baseTensors.keys), "\(kind): the same trained tensors")
            var worst = 0.0
            for (name, a) in baseTensors {
                let diff = Double(zip(a, try XCTUnwrap(t[name])).reduce(0) { max($0, abs($1.0 - $1.1)) })
                worst = max(worst, diff)
                XCTAssertLessThanOrEqual(diff, bound, "\(kind): \(name) differs by \(diff / Self.lr) lr")
            }
            print("placement \(kind): worst weight difference \(worst / Self.lr) lr over \(Self.steps) steps vs contiguous")
        }
    }

    /// A checkpoint of a contiguous run resumes under --placement balanced: the experts are read by name,
    /// the run says so, and it ends where the uninterrupted contiguous run ends (bounds as above).
    func testResumeUnderAnotherPlacement() throws {
        let esft = ["--experts", path("experts.json")]
        let base = try train(ranks: 3, esft, tag: "resume-base", steps: 4, extra: ["--checkpoint-every", "2"])
        let checkpoint = base.out.appendingPathComponent("checkpoints/step-000002")
        let manifest = try JSONSerialization.jsonObject(with: Data(contentsOf: checkpoint.appendingPathComponent("manifest.json"))) as! [String: Any]
        XCTAssertEqual(manifest["placement"] as? String, "contiguous")
        XCTAssertNotNil(manifest["expert_owners"] as? [String: [Int]])
        let resumed = try train(ranks: 3, esft, tag: "resume-balanced", steps: 4,
                                extra: ["--placement", "balanced", "--resume", checkpoint.path])
        XCTAssertTrue(resumed.stdout.contains("trained with --placement contiguous; this run has --placement balanced"), resumed.stdout)
        let a = try trained(base), b = try trained(resumed)
        for (name, x) in a {
            let diff = Double(zip(x, try XCTUnwrap(b[name])).reduce(0) { max($0, abs($1.0 - $1.1)) })
            XCTAssertLessThanOrEqual(diff, 0.05 * Self.lr * 4, name)
        }
    }

    func testAffinityNeedsRouting() throws {
        let r = try train(ranks: 1, ["--experts", path("experts.json")], tag: "no-routing", steps: 1,
                          extra: ["--placement", "affinity"], expectSuccess: false)
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("--placement affinity needs --placement-routing DIR"), r.stderr)
        let bad = try train(ranks: 1, ["--experts", path("experts.json")], tag: "bad-kind", steps: 1,
                            extra: ["--placement", "scattered"], expectSuccess: false)
        XCTAssertTrue(bad.stderr.contains("'placement' must be one of contiguous, balanced, affinity"), bad.stderr)
    }
}

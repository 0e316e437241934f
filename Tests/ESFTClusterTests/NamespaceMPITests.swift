import ESFTTestSupport
import Foundation
import XCTest

/// MPI across separate network hosts: scripts/netns-mpirun.sh gives each rank its own network namespace
/// (own hostname, address on a private subnet, veth to a bridge) and forces Open MPI onto TCP
/// (`--mca btl tcp,self`, interfaces pinned), as between real nodes; the namespaces are deleted when the
/// script ends, also on failure.
final class NamespaceMPITests: XCTestCase {
    static var dir: URL?
    static let steps = 10, lr = 1e-4
    // Experts of the tiny model's two MoE layers spread so that each of 3 ranks (16 experts: 6, 5, 5) owns some.
    static let expertConfig = #"{"experts": {"1": [0, 7, 13], "2": [5, 11]}, "shared_experts": false, "non_expert_modules": false}"#

    override class func setUp() {
        let d = try! Fixtures.tempDirectory("esft-netns")
        dir = d
        let r = try! Executables.esft(["init", ClusterScripts.repo.appendingPathComponent("configs/tiny.json").path,
                                       d.appendingPathComponent("model").path, "--seed", "7", "--expert-shards", "3"])
        precondition(r.status == 0, r.stderr)
        try! TokenDatasets.writeRandom(to: d.appendingPathComponent("data.h5"), rows: 40, seqLen: 48, tokenRange: 32..<127, seed: 3)
        try! Data(expertConfig.utf8).write(to: d.appendingPathComponent("experts.json"))
    }
    override class func tearDown() { if let d = dir { try? FileManager.default.removeItem(at: d) } }

    override func setUpWithError() throws {
        if let why = MPIRun.unavailableReason { throw XCTSkip(why) }
    }

    func path(_ name: String) -> String { Self.dir!.appendingPathComponent(name).path }

    func netns(_ mpirunArguments: [String], nodes: Int = 3) throws -> ClusterScripts.Result {
        let r = try ClusterScripts.run(ClusterScripts.script("netns-mpirun.sh"), ["--nodes", "\(nodes)", "--"] + mpirunArguments,
                                       timeout: 600)
        if let why = r.skipReason { throw XCTSkip(why) }
        XCTAssertFalse(r.timedOut, "mpirun across namespaces hung:\n\(r.output)")
        return r
    }

    func testMPICheckAcrossThreeHostsOverTCP() throws {
        let r = try netns(["-n", "3", MPIRun.esftExecutable.path, "mpi-check", "--size-mib", "4"])
        XCTAssertEqual(r.status, 0, r.output)
        // One rank per namespace: three hosts, so no two ranks can use shared memory.
        for i in 0..<3 { XCTAssertTrue(r.stdout.contains("rank \(i): host node\(i),"), r.stdout) }
        XCTAssertTrue(r.stdout.contains("checks passed on 3 ranks"), r.stdout)
        let bandwidth = try XCTUnwrap(r.stdout.split(separator: "\n").first { $0.hasPrefix("PASS  allToAllV bandwidth") })
        print("netns TCP, 3 hosts: \(bandwidth)")
        XCTAssertTrue(bandwidth.contains("GB/s per rank"), String(bandwidth))
        XCTAssertEqual(try namespacesLeft(r), [], "every namespace deleted")
    }

    func testThreeHostTrainingEqualsOneRankAndSharedMemory() throws {
        func args(_ out: String) -> [String] {
            ["train", "--model", path("model"), "--data", path("data.h5"), "--experts", path("experts.json"), "--out", path(out),
             "--steps", "\(Self.steps)", "--batch-rows", "6", "--lr", "\(Self.lr)", "--aux-alpha", "0.001", "--threads", "1"]
        }
        let one = try Executables.esft(args("one"))
        XCTAssertEqual(one.status, 0, one.stderr)
        let shm = try MPIRun.run(ranks: 3, arguments: args("shm"), timeout: 600)
        XCTAssertEqual(shm.status, 0, shm.output)
        let tcp = try netns(["-n", "3", MPIRun.esftExecutable.path] + args("tcp"))
        XCTAssertEqual(tcp.status, 0, tcp.output)

        // Same ranks, threads and BLAS core as the shared-memory run: the transport must not change a bit.
        let tcpFile = try Data(contentsOf: URL(fileURLWithPath: path("tcp/trained.safetensors")))
        XCTAssertTrue(tcpFile == (try Data(contentsOf: URL(fileURLWithPath: path("shm/trained.safetensors")))),
                      "3 ranks over TCP and over shared memory wrote different trained.safetensors")
        let tcpMetrics = try metrics("tcp"), shmMetrics = try metrics("shm"), oneMetrics = try metrics("one")
        XCTAssertEqual(tcpMetrics.map { $0["loss"] as? Double }, shmMetrics.map { $0["loss"] as? Double })
        XCTAssertGreaterThan(tcpMetrics.last?["comm_bytes"] as? Double ?? 0, 0, "tokens travelled between hosts")

        // Against 1 rank: the bounds of TrainEquivalenceTests (docs/testing.md). Losses within 1e-6 relative
        // (fp64 sums of fp32 terms a few ulps apart); weights within 0.05·lr·steps (5% of one AdamW step per step,
        // as elements with gradients below eps turn rounding into visible parts of a step).
        for (a, b) in zip(oneMetrics, tcpMetrics) {
            let la = try XCTUnwrap(a["loss"] as? Double), lb = try XCTUnwrap(b["loss"] as? Double)
            XCTAssertLessThanOrEqual(abs(la - lb) / la, 1e-6, "step \(a["step"]!): loss \(lb) vs \(la)")
        }
        XCTAssertEqual(oneMetrics.count, Self.steps)
        let base = try ClusterScripts.tensors(URL(fileURLWithPath: path("one/trained.safetensors")))
        let other = try ClusterScripts.tensors(URL(fileURLWithPath: path("tcp/trained.safetensors")))
        XCTAssertEqual(Set(base.keys), Set(other.keys))
        XCTAssertEqual(base.count, 5 * 3, "the 5 selected experts' three projections")
        let bound = 0.05 * Self.lr * Double(Self.steps)
        var worst = 0.0
        for (name, a) in base {
            let b = try XCTUnwrap(other[name])
            let d = Double(zip(a, b).reduce(0) { max($0, abs($1.0 - $1.1)) })
            worst = max(worst, d)
            XCTAssertLessThanOrEqual(d, bound, "\(name) differs by \(d / Self.lr) lr")
        }
        let stepSeconds = tcpMetrics.compactMap { $0["step_seconds"] as? Double }.sorted()
        print("netns TCP, 3 hosts: worst weight difference to 1 rank \(worst / Self.lr) lr over \(Self.steps) steps; median step " +
              "\(stepSeconds[stepSeconds.count / 2]) s (shared memory: \(median(shmMetrics)) s)")
        XCTAssertEqual(try namespacesLeft(tcp), [], "every namespace deleted")
    }

    func metrics(_ out: String) throws -> [[String: Any]] {
        try String(contentsOfFile: path("\(out)/metrics.jsonl"), encoding: .utf8).split(separator: "\n")
            .map { try XCTUnwrap(JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]) }
    }
    func median(_ m: [[String: Any]]) -> Double {
        let s = m.compactMap { $0["step_seconds"] as? Double }.sorted()
        return s.isEmpty ? 0 : s[s.count / 2]
    }
    /// Namespaces the script made (it names their prefix on stderr) that still exist.
    func namespacesLeft(_ r: ClusterScripts.Result) throws -> [String] {
        let line = try XCTUnwrap(r.stderr.split(separator: "\n").first { $0.hasPrefix("netns-mpirun: namespaces ") })
        let prefix = String(line.split(separator: " ")[2])
        let names = (try? FileManager.default.contentsOfDirectory(atPath: "/run/netns")) ?? []
        return names.filter { $0.hasPrefix(prefix) }
    }
}

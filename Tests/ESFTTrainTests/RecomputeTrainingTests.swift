import ESFTTestSupport
import Foundation
import XCTest

/// `esft train --recompute` under real `mpirun -n 2`: recomputing a layer repeats its forward, dispatch
/// and combine included, on the same input, so every rank receives the same rows in the same order and
/// computes the same activations bit for bit (RecomputeTests shows it for one process); the run's losses
/// and trained weights are therefore exactly those of the run that kept its activations.
final class RecomputeTrainingTests: TrainTestCase {
    override class var tag: String { "recompute" }

    func testRecomputeTrainsTheSameWeightsOnTwoRanks() throws {
        let esft = ["--experts", path("experts.json")]
        let kept = try train(ranks: 2, esft, tag: "kept", steps: 4)
        let again = try train(ranks: 2, esft, tag: "recomputed", steps: 4, extra: ["--recompute"])
        let options = try JSONSerialization.jsonObject(with: Data(contentsOf: again.out.appendingPathComponent("run.json"))) as? [String: Any]
        XCTAssertEqual((options?["options"] as? [String: Any])?["recompute"] as? Bool, true, "run.json records --recompute")
        XCTAssertEqual(try metrics(again.out).map { $0["loss"] as? Double }, try metrics(kept.out).map { $0["loss"] as? Double })
        let a = try trained(kept), b = try trained(again)
        XCTAssertFalse(a.isEmpty)
        XCTAssertEqual(Set(a.keys), Set(b.keys))
        for (name, w) in a { XCTAssertEqual(b[name], w, name) }
        // The profile counts each exchange once: a recomputed forward's rows are not counted again.
        let p0 = try JSONSerialization.jsonObject(with: Data(contentsOf: kept.out.appendingPathComponent("profile.json"))) as? [String: Any]
        let p1 = try JSONSerialization.jsonObject(with: Data(contentsOf: again.out.appendingPathComponent("profile.json"))) as? [String: Any]
        XCTAssertNotNil(p0?["layers"]); XCTAssertEqual(p0?["layers"] as? NSArray, p1?["layers"] as? NSArray)
    }
}

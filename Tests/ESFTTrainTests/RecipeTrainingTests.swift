import ESFTBase
import ESFTStore
import ESFTTestSupport
import ESFTTrain
import Foundation
import XCTest

/// The reference recipe's training options: the config file is the recipe, row normalisation on R ranks is
/// the one-rank run, and `--final best` leaves the best evaluation's weights in trained.safetensors.
final class RecipeTrainingTests: TrainTestCase {
    override class var tag: String { "recipe" }
    let esft = ["--experts", "experts.json"]
    var experts: [String] { ["--experts", path("experts.json")] }

    func testConfigFileIsTheBuiltInRecipe() throws {
        var fromFile = TrainOptions()
        try fromFile.apply(JSONReader.load(Self.configsDir.appendingPathComponent("recipe-reference.json"), what: "training config"))
        XCTAssertEqual(fromFile, TrainOptions.reference, "configs/recipe-reference.json and --recipe reference must not drift apart")
        XCTAssertNotEqual(TrainOptions.reference, TrainOptions(), "the recipe differs from the defaults")
    }

    /// Row-normalised loss with the micro-batch aux scale over 2 micro-batches: 2 ranks make the 1-rank update.
    /// Losses: the same per-row means summed in another order, so the 1e-6 relative bound of
    /// TrainEquivalenceTests holds (see there).
    func testRowNormalizationOnTwoRanksIsTheOneRankRun() throws {
        let extra = ["--loss-normalization", "rows", "--aux-scale", "micro-batch", "--accumulation", "2"]
        let one = try train(ranks: 1, experts, tag: "rows", steps: 4, extra: extra)
        let two = try train(ranks: 2, experts, tag: "rows", steps: 4, extra: extra)
        let tokens = try train(ranks: 1, experts, tag: "tokens", steps: 4, extra: ["--accumulation", "2"])
        let a = try metrics(one.out), b = try metrics(two.out), c = try metrics(tokens.out)
        XCTAssertEqual(a.count, 4); XCTAssertEqual(b.count, 4)
        for (x, y) in zip(a, b) {
            let lx = x["loss"] as! Double, ly = y["loss"] as! Double
            XCTAssertLessThanOrEqual(abs(lx - ly) / lx, 1e-6, "step \(x["step"]!): \(ly) on 2 ranks vs \(lx) on 1")
        }
        // The random rows hold different counts of targets, so the first loss (same weights) must differ from
        // the token-normalised one: the option reaches the arithmetic.
        let r0 = a[0]["loss"] as! Double, t0 = c[0]["loss"] as! Double
        XCTAssertGreaterThan(abs(r0 - t0) / t0, 1e-5, "rows \(r0) vs tokens \(t0)")
        // aux per micro-batch is not divided by accumulation: twice the batch-scaled value for 2 micro-batches,
        // at step 1 where the weights are the same (sums of the same terms, fp64 after fp32 routing).
        let auxRows = a[0]["aux_loss"] as! Double, auxTokens = c[0]["aux_loss"] as! Double
        XCTAssertEqual(auxRows, 2 * auxTokens, accuracy: 1e-9 + 1e-6 * auxRows)
    }

    /// A large learning rate makes the validation loss turn up, so the best evaluation is not the last one;
    /// trained.safetensors must then be that evaluation's checkpointed weights, bit for bit.
    func testFinalBestIsTheBestEvaluationsWeights() throws {
        let run = try train(ranks: 1, experts, tag: "best", steps: 12,
                            extra: ["--lr", "0.05", "--eval-every", "2", "--checkpoint-every", "2", "--final", "best"])
        let lines = try metrics(run.out).filter { $0["val_loss"] != nil }
        let vals = lines.map { ($0["step"] as! Int, $0["val_loss"] as! Double) }
        XCTAssertEqual(vals.map(\.0), [2, 4, 6, 8, 10, 12])
        let best = vals.min { $0.1 < $1.1 }!   // the first of equal minima, as the Trainer keeps the earlier
        XCTAssertNotEqual(best.0, 12, "this lr was chosen so that the best evaluation is not the last: \(vals)")
        let summary = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: run.out.appendingPathComponent("summary.json"))) as? [String: Any])
        XCTAssertEqual(summary["finalWeightsStep"] as? Int, best.0)
        XCTAssertEqual(summary["finalWeightsValidationLoss"] as? Double, best.1)
        let model = try ModelDirectory(url: dir.appendingPathComponent("model"))
        let final = try trained(run)
        for (step, same) in [(best.0, true), (12, false)] {
            let folder = run.out.appendingPathComponent("checkpoints").appendingPathComponent(String(format: "step-%06d", step))
            let saved = try TrainedTensors(folder.path, model: model)
            var allEqual = true
            for (name, values) in final {
                let t = try XCTUnwrap(saved.tensors[name], name)
                if Array(UnsafeBufferPointer(start: t.values, count: values.count)) != values { allEqual = false }
            }
            XCTAssertEqual(allEqual, same, "trained.safetensors vs the checkpoint of step \(step)")
        }
        // --final best needs evaluations.
        let bad = try train(ranks: 1, experts, tag: "best-noeval", steps: 2, extra: ["--eval-every", "0", "--final", "best"], expectSuccess: false)
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertTrue(bad.stderr.contains("--final best") && bad.stderr.contains("--eval-every"), bad.stderr)
    }
}

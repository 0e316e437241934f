import ESFTModel
import ESFTTestSupport
import XCTest

/// `StepFLOPs` against counts made another way: forward from the parameter specs (2 FLOPs per weight
/// element per token, a routed expert's weights used by K/E of the tokens, plus causal attention's pairs),
/// and the training identities: full fine-tuning is 3× forward (∂input and ∂weight of every product, and
/// attention's core twice), nothing trainable adds no backward, ESFT lies in between.
final class StepFLOPsTests: XCTestCase {
    func testForwardFromSpecsAndTrainingIdentities() throws {
        for file in ["tiny", "small", "deepseek-v2-lite"] {
            let url = Fixtures.root.deletingLastPathComponent().deletingLastPathComponent()
                .appendingPathComponent("configs").appendingPathComponent("\(file).json")
            let c = try ModelConfig.load(contentsOf: url)
            let rows = 2, t = 64, n = rows * t
            var perToken = 0.0
            for s in c.parameterSpecs() where s.shape.count == 2 && s.id != .embedTokens {
                let share = s.id.routedExpert != nil ? Double(c.expertsPerToken) / Double(c.nRoutedExperts) : 1
                perToken += 2 * Double(s.shape[0] * s.shape[1]) * share
            }
            let pairs = Double(rows * t * (t + 1) / 2)
            // QKᵀ and PV of every head over the visible pairs: 2·(score dims + value dims) per pair and head.
            let perPair = 2 * Double(c.numHeads) * Double(c.attention.scoreDim + c.attention.valueDim)
            let core = Double(c.numLayers) * pairs * perPair
            let expected = perToken * Double(n) + core

            let frozen = StepFLOPs(config: c, tokens: n, seqLen: t, trainable: { _ in false })
            // Sums of a few hundred products of integers below 2^53: equal up to the order of additions.
            XCTAssertEqual(frozen.forward, expected, accuracy: 1e-12 * expected, file)
            XCTAssertEqual(frozen.backward, 0, file)

            let full = StepFLOPs(config: c, tokens: n, seqLen: t, trainable: { _ in true })
            XCTAssertEqual(full.forward, frozen.forward, file)
            XCTAssertEqual(full.total, 3 * full.forward, accuracy: 1e-12 * full.total, file)

            // ESFT: one routed expert of the last layer. Backward covers only that layer and the head's ∂input:
            // more than nothing, much less than full fine-tuning.
            let last = c.numLayers - 1
            let esft = StepFLOPs(config: c, tokens: n, seqLen: t, trainable: { $0.routedExpert.map { $0 == (last, 0) } ?? false })
            XCTAssertGreaterThan(esft.backward, 0, file)
            XCTAssertLessThan(esft.backward, 0.5 * full.backward, file)
        }
    }
}

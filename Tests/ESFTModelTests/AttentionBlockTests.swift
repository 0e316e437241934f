import ESFTKernels
@testable import ESFTModel
import ESFTTestSupport
import XCTest

/// Causal attention in row blocks (`MoETransformer.attentionBlockRows`): a block of rows computes scores
/// only against the keys it may see, and the masked zeros are written only up to its block's last key.
/// The fixtures' sequences (12–16 tokens) in blocks of 5 rows (3–4 blocks, the last one short) against
/// one block of the whole sequence (HFParityTests also runs blocks of 1, 3 and 5 rows against transformers).
/// The T×T scores and their gradient start as NaN, so a product that read past the zeros its block wrote
/// would turn the loss or a gradient into NaN.
final class AttentionBlockTests: XCTestCase {
    private var blockRowsBefore = 256
    override func setUp() { blockRowsBefore = MoETransformer.attentionBlockRows }
    override func tearDown() { MoETransformer.attentionBlockRows = blockRowsBefore }

    private func lossAndGradients(_ name: String, blockRows: Int) throws -> (loss: Double, grads: [String: [Float]]) {
        MoETransformer.attentionBlockRows = blockRows
        let f = try ModelFixture(name)
        for p in f.parameters.ordered { p.makeTrainable() }
        let t = f.batch.seqLen, scratch = f.model.scratch.attention
        for buffer in [scratch.scores_TT, scratch.dScores_TT] { buffer.reuse(count: t * t).update(repeating: .nan, count: t * t) }
        let r = try f.model.forward(f.batch, training: true)
        try f.model.backward()
        return (r.loss, Dictionary(uniqueKeysWithValues: f.parameters.trainable.map {
            ($0.name, Array(UnsafeBufferPointer(start: $0.gradPointer, count: $0.count)))
        }))
    }

    /// The same products over the same keys, regrouped: each score is the same dot product; P·V, Pᵀ·dO,
    /// dS·K and dSᵀ·Q sum the same terms (plus exact zeros in the whole-sequence case) in another order,
    /// which moves an fp32 sum of T ≤ 16 terms by ≤ 2T·u ≈ 2e-6 of its absolute sum. Through the layers
    /// below (each a product of similar length) that stays far under 1e-4 of a gradient tensor's largest
    /// entry; the logits move by as little, and the mean cross-entropy by at most its largest logit change:
    /// under 1e-5 relative. A block reading scores it did not write would give NaN or be off by O(1).
    func testBlockedAttentionEqualsOneBlockWithinRounding() throws {
        for name in try Fixtures.modelNames() {
            let whole = try lossAndGradients(name, blockRows: 100_000)
            let blocked = try lossAndGradients(name, blockRows: 5)
            XCTAssertLessThanOrEqual(abs(blocked.loss - whole.loss) / whole.loss, 1e-5, "\(name): loss")
            XCTAssertEqual(Set(blocked.grads.keys), Set(whole.grads.keys))
            var worst = 0.0
            for (param, g) in whole.grads {
                let scale = Double(g.map { abs($0) }.max() ?? 0)
                guard scale > 0 else { continue }
                let diff = Double(zip(g, blocked.grads[param]!).map { abs($0 - $1) }.max() ?? 0)
                worst = max(worst, diff / scale)
                XCTAssertLessThanOrEqual(diff, 1e-4 * scale, "\(name): \(param)")
            }
            print("\(name): blocks of 5 rows against one block: worst gradient difference \(worst) of the tensor's largest entry")
        }
    }
}

import ESFTKernels
import ESFTModel
import ESFTTestSupport
import XCTest

/// The head and cross-entropy in chunks (never the whole [B·T, V] logits): the same loss and gradients as
/// one chunk, for both loss normalisations, with chunks that cut through sequences.
final class HeadChunkTests: XCTestCase {
    func testChunkedHeadMatchesOneChunk() throws {
        for name in try Fixtures.modelNames() {
            for normalization in LossNormalization.allCases {
                let f = try ModelFixture(name)
                for p in f.parameters.ordered { p.makeTrainable() }
                let n = f.batch.batch * f.batch.seqLen
                func run(_ rows: Int?) throws -> (loss: Double, ce: Double, grads: [String: [Float]]) {
                    f.model.headChunkRows = rows
                    f.model.zeroGrad()
                    let r = try f.model.forward(f.batch, training: true, normalization: normalization)
                    try f.model.backward()
                    return (r.loss, r.crossEntropySum, Dictionary(uniqueKeysWithValues: f.parameters.trainable.map {
                        ($0.name, Array(UnsafeBufferPointer(start: $0.gradPointer, count: $0.count)))
                    }))
                }
                let whole = try run(nil)
                XCTAssertEqual(f.model.logits(count: n * f.checkpoint.config.vocabSize).count, n * f.checkpoint.config.vocabSize,
                               "one chunk keeps every row's logits")
                let chunked = try run(5)  // 5 rows: chunks straddle the two sequences (T = \(f.batch.seqLen))
                // The logits GEMM runs on 5 rows instead of B·T, so OpenBLAS may block it differently: each logit is
                // a D-term fp32 dot product, off by a few ulps (≲ D·2⁻²⁴ ≈ 2e-6 relative for D = 32), and a token's
                // cross-entropy moves by at most twice its largest logit change: 1e-6 relative bounds it (measured ~1e-9).
                XCTAssertEqual(chunked.ce, whole.ce, accuracy: 1e-6 * whole.ce, "\(name) \(normalization)")
                XCTAssertEqual(chunked.loss, whole.loss, accuracy: 1e-6 * whole.loss, "\(name) \(normalization)")
                // lm_head's gradient becomes a sum of per-chunk GEMMs (fp32, depth ≤ B·T = \(n)): rounding of
                // order depth·2⁻²⁴ ≈ 1e-6 of the largest term; every other gradient flows from ∂L/∂(normed),
                // whose rows are the same dot products: the parity tests' 1e-5 of each tensor's max covers both.
                for (param, g) in whole.grads {
                    let c = try XCTUnwrap(chunked.grads[param])
                    let scale = g.map(abs).max() ?? 0
                    guard scale > 0 else { continue }
                    let worst = zip(g, c).map { abs($0 - $1) }.max() ?? 0
                    XCTAssertLessThanOrEqual(Double(worst), 1e-5 * Double(scale), "\(name) \(normalization): \(param)")
                }
            }
        }
    }
}

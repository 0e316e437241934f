import ESFTKernels
import ESFTModel
import ESFTTestSupport
import XCTest

/// `.rows` normalisation (the ESFT reference's loss): the batch loss and every gradient equal the mean over
/// rows of what each row alone gives with `.tokens` (its own mean over its targets).
final class LossNormalizationTests: XCTestCase {
    func testRowsNormalizationIsTheMeanOfPerRowMeans() throws {
        let name = try XCTUnwrap(Fixtures.modelNames().first)
        let f = try ModelFixture(name)
        for p in f.parameters.ordered { p.makeTrainable() }
        // Mask the first half of row 0's labels so the rows hold different numbers of targets.
        let t = f.batch.seqLen
        var labels = f.batch.labels
        for i in 0..<(t / 2) { labels[i] = CrossEntropy.ignoreIndex }
        let b = TokenBatch(batch: f.batch.batch, seqLen: t, inputIds: f.batch.inputIds, labels: labels)
        let counts = b.targetsPerRow
        XCTAssertEqual(counts.count, b.batch)
        XCTAssertGreaterThan(Set(counts).count, 1, "\(name): rows must hold different numbers of targets, or rows = tokens")

        // Each row alone, normalised over its own targets.
        var rowLosses = [Double](), meanGrads: [String: [Double]] = [:]
        for r in 0..<b.batch {
            let row = TokenBatch(batch: 1, seqLen: t, inputIds: Array(b.inputIds[(r * t)..<((r + 1) * t)]),
                                 labels: Array(b.labels[(r * t)..<((r + 1) * t)]))
            f.model.zeroGrad()
            rowLosses.append(try f.model.forward(row, training: true).loss)
            try f.model.backward()
            for p in f.parameters.trainable {
                let g = UnsafeBufferPointer(start: p.gradPointer, count: p.count)
                meanGrads[p.name, default: [Double](repeating: 0, count: p.count)] = zip(meanGrads[p.name] ?? [Double](repeating: 0, count: p.count), g)
                    .map { $0 + Double($1) / Double(b.batch) }
            }
        }
        f.model.zeroGrad()
        let rows = try f.model.forward(b, training: true, normalization: .rows)
        try f.model.backward()
        let tokens = try f.model.forward(b, training: false)

        // The same terms as the per-row forwards, only GEMM blocking and the order of fp32 sums over rows differ:
        // relative rounding of a few units of 2⁻²⁴ times the reduction depth (≤ B·T·D ≈ 10⁴ here) stays ≪ 1e-5.
        let expected = rowLosses.reduce(0, +) / Double(b.batch)
        XCTAssertEqual(rows.loss, expected, accuracy: 1e-5 * expected)
        XCTAssertEqual(rows.crossEntropySum, tokens.crossEntropySum, accuracy: 1e-6 * tokens.crossEntropySum, "the plain sum is unchanged")
        // With unequal counts, the row mean differs from the token mean: the test would see a lost weighting.
        XCTAssertGreaterThan(abs(rows.loss - tokens.loss), 1e-4 * tokens.loss, "rows and tokens normalisation must differ here")

        // Gradients: within 1e-4 of each tensor's largest magnitude, the parity tests' fp32 budget (products of
        // depth ≤ B·T summed in another order, relative error ≲ depth·2⁻²⁴ ≈ 1e-5).
        for p in f.parameters.trainable {
            let want = try XCTUnwrap(meanGrads[p.name])
            let got = UnsafeBufferPointer(start: p.gradPointer, count: p.count)
            let scale = want.map(abs).max() ?? 0
            guard scale > 0 else { continue }
            let worst = zip(got, want).map { abs(Double($0) - $1) }.max() ?? 0
            XCTAssertLessThanOrEqual(worst, 1e-4 * scale, "\(name): gradient of \(p.name)")
        }
    }
}

import ESFTKernels
import ESFTModel
import ESFTTestSupport
import XCTest

final class KernelTests: XCTestCase {
    /// bf16 weights are widened a block of output rows at a time; with 4096 columns a block is 256 rows,
    /// so 600 rows take three blocks (the last partial). Results must equal the fp32 path on the same values.
    func testBF16LinearMatchesFP32AcrossBlocks() {
        let n = 5, inDim = 4096, outDim = 600
        var rng = SplitMix64(seed: 7)
        let bits = (0..<(outDim * inDim)).map { _ in UInt16(truncatingIfNeeded: 0x3C00 &+ (rng.next() % 0x0400)) ^ (rng.next() % 2 == 0 ? 0 : 0x8000) }
        let wide = bits.map { Float(bitPattern: UInt32($0) << 16) }
        let x = (0..<(n * inDim)).map { _ in Float(rng.nextGaussian()) }
        let dy = (0..<(n * outDim)).map { _ in Float(rng.nextGaussian()) }
        var y16 = [Float](repeating: 0, count: n * outDim), y32 = y16
        var dx16 = [Float](repeating: 1, count: n * inDim), dx32 = dx16
        bits.withUnsafeBufferPointer { b in wide.withUnsafeBufferPointer { w in
            Linear.forward(x: x, weight: .bf16(b.baseAddress!), bias: nil, y: &y16, n: n, inDim: inDim, outDim: outDim)
            Linear.forward(x: x, weight: .f32(w.baseAddress!), bias: nil, y: &y32, n: n, inDim: inDim, outDim: outDim)
            Linear.backward(dy: dy, x: x, weight: .bf16(b.baseAddress!), dx: &dx16, dWeight: nil, dBias: nil,
                            n: n, inDim: inDim, outDim: outDim, accumulateDx: true)
            Linear.backward(dy: dy, x: x, weight: .f32(w.baseAddress!), dx: &dx32, dWeight: nil, dBias: nil,
                            n: n, inDim: inDim, outDim: outDim, accumulateDx: true)
        } }
        y32.withUnsafeBufferPointer { XCTAssertLessThan(relativeToMax($0, y16), 1e-5) }
        dx32.withUnsafeBufferPointer { XCTAssertLessThan(relativeToMax($0, dx16), 1e-5) }
        XCTAssertNotEqual(dx16[0], 1, "accumulated into dx")
    }

    /// A frozen bf16 checkpoint stays bf16 in memory (views into the file), and still matches HF.
    func testFrozenBF16ModelIsNotWidened() throws {
        let f = try ModelFixture("group_bf16_tied")
        let matrices = f.parameters.ordered.filter { $0.shape.count == 2 }
        XCTAssertFalse(matrices.isEmpty)
        XCTAssert(matrices.allSatisfy { $0.isBF16 && !$0.ownsValue }, "2-D tensors are bf16 views into the mapped file")
        _ = try f.model.forward(f.batch, training: false)
        let v = f.checkpoint.config.vocabSize
        XCTAssertLessThan(relativeToMax(f.model.logits(count: f.batch.batch * f.batch.seqLen * v), try XCTUnwrap(f.expectedArray("logits"))), 1e-4)
        XCTAssert(f.parameters.ordered.filter { $0.shape.count == 2 }.allSatisfy { $0.isBF16 }, "forward widened nothing permanently")
    }
}

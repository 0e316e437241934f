import Foundation
import Dispatch

/// The GEMM rate this process gets on square N×N products through the GEMM layer, the median of `repeats`
/// calls after one warm-up call, in GFLOP/s (2N³ floating-point operations per call). fp32: C = A·B by
/// `sgemm`; bf16: y = x·Wᵀ by `Linear.forward` with W stored bf16 (so with oneDNN and bf16 compute, the
/// bf16×bf16→fp32 primitive, the activation rounding included). Used as the peak that model FLOP
/// utilisation is stated against (docs/performance.md).
public func measureSgemmGFLOPs(n: Int, repeats: Int = 5, compute: ComputePrecision = .fp32) -> Double {
    let a = FloatBuffer(count: n * n, zeroed: false), b = FloatBuffer(count: n * n, zeroed: false), c = FloatBuffer(count: n * n)
    var rng = SplitMix64(seed: 1)
    for i in 0..<(n * n) {
        a.pointer[i] = Float(rng.next() % 1000) / 1000 - 0.5
        b.pointer[i] = Float(rng.next() % 1000) / 1000 - 0.5
    }
    let b16 = Reusable<UInt16>()
    if compute == .bf16 { roundToBF16(b.pointer, rows: n, cols: n, stride: n, into: b16.reuse(count: n * n)) }
    func once() -> Double {
        let start = DispatchTime.now().uptimeNanoseconds
        if compute == .bf16 {
            Linear.forward(x: a.pointer, weight: .bf16(b16.reuse(count: n * n)), bias: nil, y: c.pointer, n: n, inDim: n, outDim: n)
        } else {
            sgemm(m: n, n: n, k: n, a: a.pointer, lda: n, b: b.pointer, ldb: n, c: c.pointer, ldc: n)
        }
        return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
    }
    _ = once()
    let times = (0..<max(1, repeats)).map { _ in once() }.sorted()
    return 2 * Double(n) * Double(n) * Double(n) / times[times.count / 2] / 1e9
}

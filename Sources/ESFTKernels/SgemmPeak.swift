import Foundation
import Dispatch

/// The sgemm rate this process gets: C = A·B for square N×N fp32 matrices through the GEMM layer, the
/// median of `repeats` calls after one warm-up call, in GFLOP/s (2N³ floating-point operations per call).
/// Used as the peak that model FLOP utilisation is stated against (docs/performance.md).
public func measureSgemmGFLOPs(n: Int, repeats: Int = 5) -> Double {
    let a = FloatBuffer(count: n * n, zeroed: false), b = FloatBuffer(count: n * n, zeroed: false), c = FloatBuffer(count: n * n)
    var rng = SplitMix64(seed: 1)
    for i in 0..<(n * n) {
        a.pointer[i] = Float(rng.next() % 1000) / 1000 - 0.5
        b.pointer[i] = Float(rng.next() % 1000) / 1000 - 0.5
    }
    func once() -> Double {
        let start = DispatchTime.now().uptimeNanoseconds
        sgemm(m: n, n: n, k: n, a: a.pointer, lda: n, b: b.pointer, ldb: n, c: c.pointer, ldc: n)
        return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
    }
    _ = once()
    let times = (0..<max(1, repeats)).map { _ in once() }.sorted()
    return 2 * Double(n) * Double(n) * Double(n) / times[times.count / 2] / 1e9
}

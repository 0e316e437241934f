@testable import ESFTModel
import ESFTKernels
import XCTest

/// Routed experts side by side (`ExpertWorkers`) and products split by the GEMM layer.
final class ExpertWorkersTests: XCTestCase {
    private var threadsBefore = 1
    override func setUp() { threadsBefore = Threads.count }
    override func tearDown() { Threads.set(threadsBefore) }

    private func assignment(_ rows: [Int], workers: Int) -> [Int]? {
        var workerOf = [Int32](repeating: -1, count: rows.count), byRows = workerOf, load = [Int32](repeating: 0, count: workers)
        let balanced = ExpertWorkers.assign(rows: { rows[$0] }, localExperts: rows.count, workers: workers,
                                            workerOf: &workerOf, byRows: &byRows, load: &load)
        return balanced ? workerOf.map(Int.init) : nil
    }

    /// Longest first to the least-loaded worker: 10→0, 7→1, 5→1 (12), 3→0 (13), 3→1 (15), 2→0 (15).
    /// One dominant expert (100 of 102 rows) would leave a core idle: one at a time instead, as with no rows.
    func testAssignmentIsLongestFirstAndRefusesUnbalancedSplits() {
        XCTAssertEqual(assignment([3, 10, 2, 7, 3, 5], workers: 2), [0, 0, 0, 1, 1, 1])
        XCTAssertEqual(assignment([4, 4, 4], workers: 3), [0, 1, 2])
        XCTAssertNil(assignment([100, 1, 1], workers: 2))
        XCTAssertNil(assignment([0, 0, 0], workers: 2))
    }

    /// With 1 thread the experts run one at a time; with 2 they run side by side, each expert's three
    /// products being the same single-threaded sgemm calls on the same operands (bf16 experts widened
    /// exactly, each worker into its own slot), and every elementwise kernel computing each element alone:
    /// outputs, ∂x, ∂weights and every weight gradient are bit-identical. Experts 1 and 3 are frozen bf16.
    func testSideBySideExpertsEqualOneAtATime() throws {
        func run(threads: Int) throws -> (out: [Float], dx: [Float], dTopk: [Float], grads: [[Float]]) {
            Threads.set(threads)
            let f = DispatchFixture(tokens: 96, dim: 24, inner: 20, experts: 6, k: 2, unused: 5, seed: 7, frozenBF16: [1, 3])
            let t = f.dispatcher(LocalExchange())
            let saved = DispatchSaved(), scratch = Scratch()
            var out = [Float](repeating: .nan, count: f.n * f.d)
            try f.forward(t, out: &out, saved: saved, scratch: scratch)
            var rng = SplitMix64(seed: 3)
            let r = (0..<(f.n * f.d)).map { _ in Float(rng.nextGaussian()) }
            var dx = [Float](repeating: 0, count: f.n * f.d), dTopk = [Float](repeating: .nan, count: f.n * f.k)
            try f.backward(t, dOut: r, dx: &dx, dTopk: &dTopk, saved: saved, scratch: scratch)
            return (out, dx, dTopk, f.parameters.ordered.compactMap { $0.gradient.map { Array($0) } })
        }
        let runsBefore = ExpertWorkers.sideBySideRuns
        let one = try run(threads: 1)
        XCTAssertEqual(ExpertWorkers.sideBySideRuns, runsBefore, "one thread: one expert at a time")
        let two = try run(threads: 2)
        XCTAssertEqual(ExpertWorkers.sideBySideRuns, runsBefore + 2, "two threads: forward and backward side by side")
        func differences(_ a: [Float], _ b: [Float]) -> String? {
            guard a.count == b.count else { return "\(a.count) values against \(b.count)" }
            let diff = a.indices.filter { a[$0].bitPattern != b[$0].bitPattern }
            return diff.isEmpty ? nil : "\(diff.count) of \(a.count) differ, first at \(diff[0]): \(a[diff[0]]) against \(b[diff[0]])"
        }
        XCTAssertNil(differences(two.out, one.out), "out")
        XCTAssertNil(differences(two.dx, one.dx), "dx")
        XCTAssertNil(differences(two.dTopk, one.dTopk), "dTopkWeight")
        XCTAssertEqual(two.grads.count, one.grads.count)
        for (i, (g2, g1)) in zip(two.grads, one.grads).enumerated() { XCTAssertNil(differences(g2, g1), "gradient \(i)") }
        XCTAssertEqual(one.grads.count, 4 * 3, "four trainable experts' three projections")
        XCTAssertEqual(one.grads.filter { $0.contains { $0 != 0 } }.count, 3 * 3, "experts 0, 2, 4 have gradients (5 gets no rows)")
    }

    /// Products split by the GEMM layer against float64, for every transpose, beta 0 and 1, and C wider
    /// than n (ldc > n): on 3 threads 301×70 splits into 3 row blocks and 40×517 into 3 column blocks, on
    /// 4 threads 200×180 into a 2 × 2 grid (the grids that pack least). Each element is a length-k dot
    /// (plus beta·C): in fp32 off by ≤ (k+1)·u·(Σ|a·b| + |beta·C|) in any order. A misplaced block (wrong
    /// offset or stride) is off by O(1).
    func testSplitProductsMatchFloat64() {
        let u = 0x1p-24
        for threads in [1, 3, 4] {
            Threads.set(threads)
            for (m, n, k) in [(301, 70, 50), (40, 517, 64), (200, 180, 40)] {  // 1.05 M, 1.3 M, 1.4 M multiply-adds
                for transA in [false, true] {
                    for transB in [false, true] {
                        for beta: Float in [0, 1] {
                            var rng = SplitMix64(seed: UInt64(m + n + k))
                            let a = (0..<(m * k)).map { _ in Float(rng.nextGaussian()) }
                            let b = (0..<(k * n)).map { _ in Float(rng.nextGaussian()) }
                            let ldc = n + 3
                            let c0 = (0..<(m * ldc)).map { _ in Float(rng.nextGaussian()) }
                            var c = c0
                            let lda = transA ? m : k, ldb = transB ? k : n
                            sgemm(transA: transA, transB: transB, m: m, n: n, k: k, a: a, lda: lda, b: b, ldb: ldb,
                                  beta: beta, c: &c, ldc: ldc)
                            var worst = 0.0
                            for i in 0..<m {
                                for j in 0..<n {
                                    var ref = Double(beta) * Double(c0[i * ldc + j]), mag = abs(ref)
                                    for p in 0..<k {
                                        let x = Double(transA ? a[p * lda + i] : a[i * lda + p])
                                        let y = Double(transB ? b[j * ldb + p] : b[p * ldb + j])
                                        ref += x * y; mag += abs(x * y)
                                    }
                                    let err = abs(Double(c[i * ldc + j]) - ref), bound = Double(k + 1) * u * mag
                                    worst = max(worst, err / bound)
                                }
                                for j in n..<ldc { XCTAssertEqual(c[i * ldc + j], c0[i * ldc + j], "beyond n untouched") }
                            }
                            XCTAssertLessThanOrEqual(worst, 1, "\(threads) threads, \(m)×\(n)×\(k) tA \(transA) tB \(transB) β \(beta)")
                        }
                    }
                }
            }
        }
    }
}

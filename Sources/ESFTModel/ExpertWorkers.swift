import ESFTKernels

/// Runs a rank's local experts side by side. Each expert's SwiGLU is three GEMMs over its rows; on a small
/// model those are a few dozen rows (the demo's: ~96 × 64 × 256), where OpenBLAS splitting one product
/// across threads costs more than it gains. With OpenBLAS and more than one thread, whole experts go to
/// `concurrentWorkers` (one thread each, single-threaded BLAS): longest first, each to the least-loaded
/// worker, rows being the cost (every product of an expert is linear in its rows). Results are the same
/// as one expert at a time: every expert writes only its own rows, gradients and scratch.
enum ExpertWorkers {
    /// A split whose busiest worker has more than this times the mean load runs one expert at a time
    /// instead (threaded BLAS inside each product), so a rank with one dominant expert is not left to
    /// one core.
    static let maxImbalance = 1.25

    /// Workers that may run experts side by side: one per thread, at most one per expert; one with oneDNN
    /// (not called from workers). Backward sizes this many scratch sets (`ActivationMemory` counts them).
    static func possible(localExperts: Int) -> Int {
        GEMMLayer.backend == .openblas && localExperts >= 2 ? min(Threads.count, localExperts) : 1
    }

    /// Calls of `run` that ran experts side by side (tests check the path was taken).
    nonisolated(unsafe) private(set) static var sideBySideRuns = 0

    /// Longest first, each expert to the least-loaded worker (ties: the lower index): `workerOf[le]` is
    /// written for every expert. False when the busiest worker would carry more than `maxImbalance` times
    /// the mean load (or there is no load at all): then the experts should run one at a time.
    static func assign(rows: (Int) -> Int, localExperts: Int, workers: Int, workerOf: UnsafeMutablePointer<Int32>,
                       byRows: UnsafeMutablePointer<Int32>, load: UnsafeMutablePointer<Int32>) -> Bool {
        for le in 0..<localExperts {  // insertion sort, descending rows, ties by expert
            var i = le
            while i > 0 && rows(Int(byRows[i - 1])) < rows(le) { byRows[i] = byRows[i - 1]; i -= 1 }
            byRows[i] = Int32(le)
        }
        load.update(repeating: 0, count: workers)
        var total = 0, busiest = 0
        for i in 0..<localExperts {
            let le = Int(byRows[i])
            var best = 0
            for w in 1..<workers where load[w] < load[best] { best = w }
            workerOf[le] = Int32(best); load[best] += Int32(rows(le))
            total += rows(le); busiest = max(busiest, Int(load[best]))
        }
        return total > 0 && Double(busiest * workers) <= maxImbalance * Double(total)
    }

    /// Calls `body(worker, le)` once for every local expert le in 0..<localExperts, whose assignments are
    /// `offsets[le]..<offsets[le+1]`. Worker indices are below `possible(localExperts:)`.
    static func run(offsets: UnsafePointer<Int32>, localExperts: Int, _ body: (_ worker: Int, _ le: Int) -> Void) {
        let workers = possible(localExperts: localExperts)
        guard workers > 1 else {
            for le in 0..<localExperts { body(0, le) }
            return
        }
        // Temporary scratch: 3·E + 2·W + 1 Int32s (64 experts, 2 workers: 788 bytes, on the stack).
        withUnsafeTemporaryAllocation(of: Int32.self, capacity: 3 * localExperts + 2 * workers + 1) { tmp in
            let workerOf = tmp.baseAddress!, byRows = workerOf + localExperts, order = byRows + localExperts
            let load = order + localExperts, start = load + workers
            guard assign(rows: { Int(offsets[$0 + 1] - offsets[$0]) }, localExperts: localExperts, workers: workers,
                         workerOf: workerOf, byRows: byRows, load: load) else {
                for le in 0..<localExperts { body(0, le) }
                return
            }
            sideBySideRuns += 1
            start.update(repeating: 0, count: workers + 1)  // counting sort of experts by worker
            for le in 0..<localExperts { start[Int(workerOf[le]) + 1] += 1 }
            for w in 0..<workers { start[w + 1] += start[w] }
            load.update(repeating: 0, count: workers)  // reused as each worker's fill cursor
            for le in 0..<localExperts {
                let w = Int(workerOf[le])
                order[Int(start[w] + load[w])] = Int32(le); load[w] += 1
            }
            concurrentWorkers(workers) { w in
                for i in Int(start[w])..<Int(start[w + 1]) { body(w, Int(order[i])) }
            }
        }
    }
}

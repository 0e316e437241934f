import COpenBLAS
import CDNNLShims
import Dispatch
import Foundation

/// The number of threads this process may use for its own kernels and GEMM products (OpenBLAS itself runs
/// single-threaded: the GEMM layer splits products across these threads; oneDNN gets an OpenMP team of
/// this size). Set once at start-up from `--threads` (default: the cores this rank may run on).
public enum Threads {
    public private(set) static var count: Int = {
        openblas_set_num_threads(1)  // before any product: the GEMM layer splits products itself
        return defaultCount()
    }()
    /// True while `concurrentWorkers` runs: kernels called from its workers stay on the worker's thread.
    public nonisolated(unsafe) fileprivate(set) static var insideWorkers = false

    public static func set(_ n: Int) {
        count = max(1, n)
        openblas_set_num_threads(1)  // the GEMM layer splits products itself (`openBLASProduct`)
        esft_dnnl_set_threads(Int32(count))  // oneDNN's OpenMP team, for calls from this (the main) thread
    }

    /// Cores in this process's affinity mask (mpirun binds a rank to its cores), or all online cores.
    /// Read from /proc/self/status because glibc's sched_getaffinity is hidden from Swift.
    public static func defaultCount() -> Int {
        if let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
           let line = status.split(separator: "\n").first(where: { $0.hasPrefix("Cpus_allowed:") }) {
            let hex = line.dropFirst("Cpus_allowed:".count).filter { $0.isHexDigit }
            let n = hex.reduce(0) { $0 + (Int(String($1), radix: 16) ?? 0).nonzeroBitCount }
            if n > 0 { return n }
        }
        return ProcessInfo.processInfo.activeProcessorCount
    }
}

/// Runs `body(range)` over `0..<n` split into contiguous chunks, one chunk per thread.
/// Work below `grain` items runs inline: thread hand-off costs more than it saves.
@inline(__always)
public func parallelChunks(_ n: Int, grain: Int = 256, _ body: (Range<Int>) -> Void) {
    let threads = Threads.count
    if threads <= 1 || n <= grain || Threads.insideWorkers {
        if n > 0 { body(0..<n) }
        return
    }
    let chunks = min(threads, (n + grain - 1) / grain)
    let per = (n + chunks - 1) / chunks
    concurrentWorkers(chunks) { c in
        let lo = c * per, hi = min(n, lo + per)
        if lo < hi { body(lo..<hi) }
    }
}

/// Runs `body(worker)` for workers 0..<n side by side, one thread each, on the rank's one pool: inside,
/// `parallelChunks` and GEMM products run inline on the worker's thread (OpenBLAS is single-threaded),
/// so nothing nests. For independent small products (each routed expert's SwiGLU), which keep the cores
/// busier side by side than each split across threads. Call from the main thread; the caller gives each
/// worker disjoint outputs and its own scratch (`worker` indexes it). oneDNN (shared primitive cache,
/// OpenMP teams) is not called from workers.
public func concurrentWorkers(_ n: Int, _ body: (Int) -> Void) {
    guard n > 1 else { if n == 1 { body(0) }; return }
    // Invariant: the engine calls it only from the main thread (parallelChunks runs inline inside workers).
    precondition(!Threads.insideWorkers, "concurrentWorkers does not nest")
    WidenScratch.prepare(workers: n)
    Threads.insideWorkers = true
    DispatchQueue.concurrentPerform(iterations: n, execute: body)
    Threads.insideWorkers = false
}

import COpenBLAS
import CDNNLShims
import Dispatch
import Foundation

/// The number of threads this process may use for its own kernels, OpenBLAS and oneDNN.
/// Set once at start-up from `--threads` (default: the cores this rank may run on).
public enum Threads {
    public private(set) static var count: Int = defaultCount()

    public static func set(_ n: Int) {
        count = max(1, n)
        openblas_set_num_threads(Int32(count))
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
    if threads <= 1 || n <= grain {
        if n > 0 { body(0..<n) }
        return
    }
    let chunks = min(threads, (n + grain - 1) / grain)
    let per = (n + chunks - 1) / chunks
    DispatchQueue.concurrentPerform(iterations: chunks) { c in
        let lo = c * per, hi = min(n, lo + per)
        if lo < hi { body(lo..<hi) }
    }
}

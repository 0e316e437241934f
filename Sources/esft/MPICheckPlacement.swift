import ESFTKernels
import ESFTParallel
import Foundation

/// Where one rank runs and how many kernel threads it would start: what to look at first on a new
/// cluster, because ranks that share cores while each starts one thread per core slow everything down.
struct RankPlacement: Codable, Equatable {
    var rank: Int
    var host: String
    var pid: Int32
    var cpus: String          // Cpus_allowed_list, e.g. "0-3,8"
    var threads: Int          // what --threads defaults to here
    var openblasThreads: String?

    static func current(rank: Int) -> RankPlacement {
        let cpus = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8))?
            .split(separator: "\n").first { $0.hasPrefix("Cpus_allowed_list:") }?
            .split(separator: ":").last.map { $0.trimmingCharacters(in: .whitespaces) } ?? "?"
        return RankPlacement(rank: rank, host: ProcessInfo.processInfo.hostName, pid: getpid(), cpus: cpus,
                             threads: Threads.defaultCount(),
                             openblasThreads: ProcessInfo.processInfo.environment["OPENBLAS_NUM_THREADS"])
    }

    var line: String {
        "rank \(rank): host \(host), pid \(pid), cpus \(cpus) (--threads default \(threads)), OPENBLAS_NUM_THREADS \(openblasThreads ?? "unset")"
    }

    /// "0-2,5" → {0, 1, 2, 5}; nil when unreadable.
    static func cpuSet(_ list: String) -> Set<Int>? {
        var out = Set<Int>()
        for part in list.split(separator: ",") {
            let ends = part.split(separator: "-").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
            guard let lo = ends.first, let hi = ends.last, ends.count <= 2, lo <= hi else { return nil }
            out.formUnion(lo...hi)
        }
        return out.isEmpty ? nil : out
    }

    /// Advice when ranks on one host would start more threads than they have CPUs, or disagree on OpenBLAS threads.
    static func notes(_ all: [RankPlacement]) -> [String] {
        var notes: [String] = []
        for host in Set(all.map(\.host)).sorted() {
            let here = all.filter { $0.host == host }
            guard let sets = Optional(here.compactMap { cpuSet($0.cpus) }), sets.count == here.count else { continue }
            let cpus = sets.reduce(into: Set<Int>()) { $0.formUnion($1) }.count
            let threads = here.reduce(0) { $0 + $1.threads }
            if threads > cpus {
                notes.append("on \(host), \(here.count) rank\(here.count == 1 ? "" : "s") share \(cpus) CPU\(cpus == 1 ? "" : "s") but would start \(threads) kernel threads by default: "
                             + "bind ranks (mpirun --bind-to core) or pass --threads \(max(1, cpus / here.count)) to training commands")
            }
        }
        if Set(all.map { $0.openblasThreads ?? "unset" }).count > 1 {
            notes.append("ranks disagree on OPENBLAS_NUM_THREADS; set it the same everywhere (mpirun -x OPENBLAS_NUM_THREADS)")
        }
        return notes
    }
}

extension MPICheckSuite {
    /// Every rank's placement, sent to all as JSON (which also checks broadcast of Codable values).
    func placement() throws {
        let mine = RankPlacement.current(rank: rank)
        var all: [RankPlacement] = []
        for root in 0..<size {
            all.append(try comm.broadcast(json: rank == root ? mine : nil, from: root, tag: "mpi-check"))
        }
        for p in all { say("  " + p.line) }
        for note in RankPlacement.notes(all) { say("  note: " + note) }
        try check("broadcast JSON from every rank") {
            (all.indices.filter { all[$0].rank != $0 }.map { "placement from rank \($0) names rank \(all[$0].rank)" }, "rank placements")
        }
    }
}

import Foundation

/// Which rank stopped answering, when a collective cannot say: each rank's watchdog thread rewrites
/// `DIR/rank-R` every second with a counter, its host and pid, and what the rank is doing. A rank whose counter
/// does not move over `listen` seconds has a frozen process (stopped, hung in the kernel, dead) — its watchdog
/// thread no longer runs. Counters, not clocks: the hosts' clocks need not agree. DIR must be on a file system
/// every rank sees (training's --out is).
struct StallHeartbeats {
    let directory: URL
    let rank: Int, size: Int

    func file(_ r: Int) -> URL { directory.appendingPathComponent("rank-\(r)") }

    /// This rank's beat number `beat`: "<beat> <host> <pid> <state>".
    func beat(_ beat: Int, state: String) {
        var host = [CChar](repeating: 0, count: 256)
        _ = gethostname(&host, host.count)
        try? Data("\(beat) \(String(cString: host)) \(getpid()) \(state)".utf8).write(to: file(rank))
    }

    func read(_ r: Int) -> (beat: Int, rest: String)? {
        guard let text = try? String(contentsOf: file(r), encoding: .utf8) else { return nil }
        let parts = text.split(separator: " ", maxSplits: 1)
        guard parts.count == 2, let n = Int(parts[0]) else { return nil }
        return (n, String(parts[1]))
    }

    /// The other ranks whose heartbeat stands still over `listen` seconds (or never came), described. `beating`
    /// keeps this rank's own heartbeat going meanwhile (every waiting rank listens at the same time).
    func silent(listen: Double, beating: () -> Void) -> [String] {
        let before = (0..<size).map { read($0) }
        for _ in 0..<Int((listen / 0.5).rounded(.up)) { Thread.sleep(forTimeInterval: 0.5); beating() }
        return (0..<size).filter { $0 != rank }.compactMap { r in
            let after = read(r)
            guard let after else { return "rank \(r) (no heartbeat in \(directory.path))" }
            guard before[r]?.beat == after.beat else { return nil }
            let words = after.rest.split(separator: " ", maxSplits: 2).map(String.init)
            let host = words.first ?? "?", pid = words.count > 1 ? words[1] : "?", state = words.count > 2 ? words[2] : ""
            return "rank \(r) (host \(host), pid \(pid); last seen \(state))"
        }
    }
}

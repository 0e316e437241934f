import ESFTBase
import Foundation

/// One training job per output directory: `DIR/.esft-lock` names the job that writes DIR (host, PID, SLURM job,
/// start time). Rank 0 takes it before it writes anything into DIR and removes it when the run ends (finished,
/// preempted, or stopped by an error it reports); a second job finds it and is refused, naming the holder.
///
/// Taking it is atomic on local and NFS file systems alike: the holder record is written to a private temporary
/// and hard-linked to the lock's name (link(2) fails with EEXIST when the lock exists). A lock left by a job that
/// died without removing it (kill -9, a lost node) is taken over only when that is safe to know: the holder ran
/// on this host and its PID is no longer an esft process, or the holder is an earlier run of this same SLURM job
/// (a requeue: SLURM ends a job's previous run before it starts the next). A lock of a dead job on another host
/// cannot be told from a live one; the message says so and which file to remove.
public final class OutputLock {
    public struct Holder: Codable, Equatable {
        public var host: String
        public var pid: Int32
        public var slurmJobId: String?
        public var started: String
    }

    public static let fileName = ".esft-lock"
    public let url: URL
    public let holder: Holder
    private var released = false

    private init(url: URL, holder: Holder) { self.url = url; self.holder = holder }

    /// This process's holder record.
    static func current() -> Holder {
        var name = [CChar](repeating: 0, count: 256)
        let host = gethostname(&name, name.count) == 0 ? String(cString: name) : "unknown-host"
        let job = ProcessInfo.processInfo.environment["SLURM_JOB_ID"].flatMap { $0.isEmpty ? nil : $0 }
        return Holder(host: host, pid: getpid(), slurmJobId: job, started: ISO8601DateFormatter().string(from: Date()))
    }

    /// Takes the lock of `dir` (an existing directory); `note` hears about a stale lock taken over.
    public static func acquire(in dir: URL, note: (String) -> Void = { _ in }) throws -> OutputLock {
        let url = dir.appendingPathComponent(fileName), me = current()
        let data = try JSONEncoder().encode(me)
        let temporary = dir.appendingPathComponent(".esft-lock.tmp-\(me.pid)")
        try? FileManager.default.removeItem(at: temporary)
        do { try data.write(to: temporary) } catch {
            throw ESFTError("\(dir.path): cannot write the output lock (\(ErrorText.reason(error)))")
        }
        defer { try? FileManager.default.removeItem(at: temporary) }
        if link(temporary.path, url.path) == 0 { return OutputLock(url: url, holder: me) }
        guard errno == EEXIST else {
            throw ESFTError("\(url.path): cannot create the output lock (\(ErrorText.posix(errno)))")
        }
        let other = try holder(at: url)
        let why: String
        if let job = me.slurmJobId, job == other.slurmJobId {
            why = "an earlier run of this SLURM job \(job) (host \(other.host), pid \(other.pid)), requeued"
        } else if other.host == me.host && !isEsftProcess(other.pid) {
            why = "a run that is no longer running (host \(other.host), pid \(other.pid), started \(other.started))"
        } else {
            throw ESFTError("\(dir.path) is in use by another esft train: \(describe(other)) (lock \(url.path)). Two jobs must not write one --out; wait for that one, or choose another --out. If that job is gone (killed on another host), remove \(url.path) and run again")
        }
        // Take it over: rename replaces atomically; a rival taking it over at the same moment is caught by the re-read.
        guard rename(temporary.path, url.path) == 0 else {
            throw ESFTError("\(url.path): cannot take over the output lock (\(ErrorText.posix(errno)))")
        }
        let now = try holder(at: url)
        guard now == me else {
            throw ESFTError("\(dir.path) was just taken by another esft train: \(describe(now)) (lock \(url.path))")
        }
        note("took over the output lock of \(why)")
        return OutputLock(url: url, holder: me)
    }

    /// Removes the lock if it is still this process's.
    public func release() {
        guard !released else { return }
        released = true
        if (try? Self.holder(at: url)) == holder { unlink(url.path) }
    }

    deinit { release() }

    static func holder(at url: URL) throws -> Holder {
        do {
            return try JSONDecoder().decode(Holder.self, from: Data(contentsOf: url))
        } catch {
            throw ESFTError("\(url.path): an output lock that cannot be read (\(ErrorText.reason(error))); if no job writes \(url.deletingLastPathComponent().path), remove it and run again")
        }
    }

    static func describe(_ h: Holder) -> String {
        "host \(h.host), pid \(h.pid)" + (h.slurmJobId.map { ", SLURM job \($0)" } ?? "") + ", since \(h.started)"
    }

    /// Whether `pid` is a live esft process on this host (a reused PID running something else is not).
    static func isEsftProcess(_ pid: Int32) -> Bool {
        guard pid > 0, kill(pid, 0) == 0 || errno == EPERM else { return false }
        guard let cmdline = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return true }
        let argv0 = cmdline.split(separator: 0).first.map { String(decoding: $0, as: UTF8.self) } ?? ""
        return URL(fileURLWithPath: argv0).lastPathComponent == "esft"
    }
}

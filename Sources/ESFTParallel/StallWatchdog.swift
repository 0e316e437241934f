import ESFTBase
import Foundation

/// Turns a hang into an exit. MPI has no timeouts: when one rank stops answering (SIGSTOP, a frozen NFS
/// mount, a dead link), every other rank waits in its next collective forever and a SLURM job burns its whole
/// time limit. Each rank's watchdog thread wakes every second; when its rank has been inside one collective
/// for longer than the timeout, it prints what it waited in (the collective, its tag, the run's context such
/// as the step) and aborts the whole job through MPI (mpirun and srun then end every rank, the stopped one
/// included). A rank that is computing is never "stalled": only waiting for peers is, and a stalled rank's
/// peers are the ones that notice. A slow rank trips nobody as long as the others wait less than the timeout.
///
/// Collectives cannot tell which peer is missing (every rank waits in the same call); the message says so.
/// The abort is called from the watchdog thread while the main thread sits in MPI (MPI_THREAD_FUNNELED allows
/// only the main thread to call MPI); Open MPI's MPI_Abort works from there, and if it ever returned the
/// process would end with `_exit(1)`.
public final class StallWatchdog: @unchecked Sendable {
    private let lock = NSLock()
    private var timeout: Double?
    private var waitingSince: UInt64 = 0  // Stopwatch.now() on entering a collective; 0: not waiting
    private var waitingIn = ""
    private var context = ""
    private var started = false
    private let rank: Int, size: Int
    private let abort: (String) -> Void
    private var heartbeats: StallHeartbeats?
    private var beatCount = 0

    init(rank: Int, size: Int, abort: @escaping (String) -> Void) {
        self.rank = rank; self.size = size; self.abort = abort
    }

    /// Seconds a rank may wait inside one collective; nil switches the watchdog off. Starts the thread once.
    func setTimeout(_ seconds: Double?) {
        lock.lock(); timeout = seconds; let start = !started && seconds != nil; if start { started = true }; lock.unlock()
        guard start else { return }
        let thread = Thread { [self] in watch() }
        thread.name = "esft stall watchdog"
        thread.start()
    }

    var currentTimeout: Double? { lock.lock(); defer { lock.unlock() }; return timeout }

    /// Heartbeats in `directory` (shared by every rank), so a stall's message can name the rank that went silent.
    func setHeartbeats(_ directory: URL?) {
        if let directory { try? FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true) }
        lock.lock(); heartbeats = directory.map { StallHeartbeats(directory: $0, rank: rank, size: size) }; lock.unlock()
        beat()  // at once: a rank stopped before the watchdog's first tick is still named by host and pid
    }

    /// One heartbeat: the next count and what the rank is doing.
    private func beat() {
        lock.lock()
        beatCount += 1
        let n = beatCount, beats = heartbeats, since = waitingSince, what = waitingIn, during = context
        lock.unlock()
        beats?.beat(n, state: (since > 0 ? "waiting in \(what)" : "computing") + (during.isEmpty ? "" : " during \(during)"))
    }

    /// What the rank is doing, for the message (e.g. "step 12").
    func setContext(_ text: String) { lock.lock(); context = text; lock.unlock() }

    func enter(_ collective: String) {
        lock.lock(); waitingSince = Stopwatch.now(); waitingIn = collective; lock.unlock()
    }

    func leave() { lock.lock(); waitingSince = 0; lock.unlock() }

    private func watch() {
        while true {
            Thread.sleep(forTimeInterval: 1)
            beat()
            lock.lock()
            let limit = timeout, since = waitingSince, what = waitingIn, during = context, beats = heartbeats
            lock.unlock()
            guard let limit, since > 0 else { continue }
            let waited = Stopwatch.seconds(since: since)
            guard waited > limit else { continue }
            // Name the silent rank when heartbeats say which (two more beats' time of listening).
            let silent = beats?.silent(listen: 2.5) { beat() } ?? []
            let culprit = silent.isEmpty ? "a rank of the \(size) has stopped answering (stopped or frozen process, hung file system, dead link; a collective cannot say which)"
                : "not answering: \(silent.joined(separator: "; ")) — its heartbeat stood still"
            var host = [CChar](repeating: 0, count: 256)
            _ = gethostname(&host, host.count)
            abort(String(format: "no progress for %.0f s: waiting in %@%@ for the other ranks (--stall-timeout %.0f s); %@. This rank: host %@, pid %d. Aborting the job.",
                         waited, what, during.isEmpty ? "" : " during \(during)", limit, culprit, String(cString: host), getpid()))
            _exit(1)
        }
    }
}

import ESFTStore
import ESFTTrain
import ESFTTestSupport
import Foundation
import XCTest

/// What real clusters do to a job (docs/testing.md, the fault matrix): a second job on one --out, a lock left by a
/// dead job, a rank that stops answering, a slow but live rank, a NaN on one rank only.
/// A value set by a helper thread and read once the job is over.
private final class Shared<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: T
    init(_ value: T) { stored = value }
    var value: T {
        get { lock.lock(); defer { lock.unlock() }; return stored }
        set { lock.lock(); stored = newValue; lock.unlock() }
    }
}

final class FaultTests: TrainTestCase {
    override class var tag: String { "faults" }

    func args(_ out: URL, steps: Int, extra: [String] = []) -> [String] {
        ["train", "--model", path("model"), "--data", path("data.h5"), "--out", out.path, "--steps", "\(steps)",
         "--batch-rows", "\(Self.rows)", "--lr", "1e-4", "--threads", "1", "--experts", path("experts.json")] + extra
    }

    func fresh(_ name: String) -> URL {
        let out = dir.appendingPathComponent(name)
        try? FileManager.default.removeItem(at: out)
        return out
    }

    /// Waits (≤ 120 s) until `path` exists and has `lines` lines.
    func waitForLines(_ path: String, _ lines: Int) {
        let deadline = Date().addingTimeInterval(120)
        while Date() < deadline {
            if let text = try? String(contentsOfFile: path, encoding: .utf8), text.split(separator: "\n").count >= lines { return }
            usleep(10_000)
        }
    }

    func lockHolder(_ out: URL) -> [String: Any]? {
        (try? Data(contentsOf: out.appendingPathComponent(OutputLock.fileName)))
            .flatMap { try? JSONSerialization.jsonObject(with: $0) as? [String: Any] }
    }

    /// A second job on a running job's --out (a requeue racing a manual restart) is refused, naming the holder; the
    /// first runs on undisturbed, and its lock is gone once it stops.
    func testSecondJobOnOneOutIsRefused() throws {
        let out = fresh("two-jobs")
        let second = Shared<Executables.Result?>(nil), holder = Shared<[String: Any]?>(nil)
        let first = try Executables.run(Executables.esft, args(out, steps: 100_000)) { pid in
            DispatchQueue.global().async { [self] in
                waitForLines(out.appendingPathComponent("metrics.jsonl").path, 2)
                holder.value = lockHolder(out)
                second.value = try? Executables.esft(args(out, steps: 100_000, extra: ["--resume", "auto"]))
                kill(pid, SIGTERM)  // the first job: stop, checkpoint, release the lock
            }
        }
        XCTAssertEqual(first.status, 75, "the first job stopped by its signal, undisturbed: \(first.stderr)")
        let s = try XCTUnwrap(second.value)
        XCTAssertEqual(s.status, 1, s.stdout)
        let pid = try XCTUnwrap(holder.value?["pid"] as? Int)
        XCTAssert(s.stderr.contains("\(out.path) is in use by another esft train: host ") && s.stderr.contains("pid \(pid)"), s.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: out.appendingPathComponent(OutputLock.fileName).path), "released at the stop")
        // The directory is free again: --resume continues.
        let resumed = try Executables.esft(args(out, steps: 2 + (try String(contentsOf: out.appendingPathComponent("metrics.jsonl"), encoding: .utf8)
            .split(separator: "\n").count), extra: ["--resume"]))
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
    }

    /// A lock left behind: by a dead process on this host (taken over), by this SLURM job's earlier run (taken
    /// over), by a process on another host (refused, naming the file to remove), or garbled (refused).
    func testLeftLocks() throws {
        let dead = Process()
        dead.executableURL = URL(fileURLWithPath: "/bin/true")
        try dead.run(); dead.waitUntilExit()
        var host = [CChar](repeating: 0, count: 256)
        gethostname(&host, host.count)
        let here = String(cString: host)
        let cases: [(String, [String: Any], [String: String], Int32, String)] = [
            ("dead", ["host": here, "pid": Int(dead.processIdentifier), "started": "2026-01-01T00:00:00Z"], [:], 0,
             "took over the output lock of a run that is no longer running"),
            ("requeue", ["host": "node-17", "pid": 4242, "slurmJobId": "9001", "started": "2026-01-01T00:00:00Z"], ["SLURM_JOB_ID": "9001"], 0,
             "took over the output lock of an earlier run of this SLURM job 9001"),
            ("elsewhere", ["host": "node-17", "pid": 4242, "slurmJobId": "9001", "started": "2026-01-01T00:00:00Z"], ["SLURM_JOB_ID": "9002"], 1,
             "is in use by another esft train: host node-17, pid 4242, SLURM job 9001"),
        ]
        for (name, lock, env, status, message) in cases {
            let out = fresh("lock-\(name)")
            try FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)
            try JSONSerialization.data(withJSONObject: lock).write(to: out.appendingPathComponent(OutputLock.fileName))
            let r = try Executables.esft(args(out, steps: 2, extra: ["--resume", "auto"]), environment: env)
            XCTAssertEqual(r.status, status, "\(name): \(r.stderr)")
            XCTAssert((r.stdout + r.stderr).contains(message), "\(name): \(r.stdout)\n\(r.stderr)")
            if status == 0 {
                XCTAssertFalse(FileManager.default.fileExists(atPath: out.appendingPathComponent(OutputLock.fileName).path), "\(name): released")
            } else {
                XCTAssert(r.stderr.contains("remove \(out.path)/\(OutputLock.fileName)"), r.stderr)
                XCTAssertEqual(lockHolder(out)?["host"] as? String, "node-17", "the other host's lock is left alone")
                XCTAssertFalse(FileManager.default.fileExists(atPath: out.appendingPathComponent("metrics.jsonl").path), "nothing written")
            }
        }
        let garbled = fresh("lock-garbled")
        try FileManager.default.createDirectory(at: garbled, withIntermediateDirectories: true)
        try Data("{not json".utf8).write(to: garbled.appendingPathComponent(OutputLock.fileName))
        let r = try Executables.esft(args(garbled, steps: 2, extra: ["--resume", "auto"]))
        XCTAssertEqual(r.status, 1)
        XCTAssert(r.stderr.contains("\(OutputLock.fileName): an output lock that cannot be read"), r.stderr)
    }

    /// SIGSTOP on one rank of a 3-rank run: the others' watchdogs end the job within the timeout + 10 s, saying
    /// what they waited in and naming the stopped rank by its heartbeat; SIGCONT afterwards changes nothing.
    func testStalledRankEndsTheJobInBoundedTime() throws {
        if let why = MPIRun.unavailableReason { throw XCTSkip(why) }
        let out = fresh("stall"), timeout = 4.0
        let stoppedAt = Shared<Date?>(nil), stopped = Shared<Int32>(0)
        let r = try MPIRun.run(ranks: 3, arguments: args(out, steps: 100_000, extra: ["--stall-timeout", "\(Int(timeout))"]),
                               timeout: 120) { pid in
            DispatchQueue.global().async { [self] in
                waitForLines(out.appendingPathComponent("metrics.jsonl").path, 3)
                // Rank 2 by its environment (mpirun's children are the ranks).
                for p in MPIRun.descendants(of: pid) {
                    guard let env = FileManager.default.contents(atPath: "/proc/\(p)/environ") else { continue }
                    if env.split(separator: 0).contains(where: { String(decoding: $0, as: UTF8.self) == "OMPI_COMM_WORLD_RANK=2" }) {
                        stopped.value = p; stoppedAt.value = Date(); kill(p, SIGSTOP); break
                    }
                }
            }
        }
        defer { if stopped.value > 0 { kill(stopped.value, SIGCONT); kill(stopped.value, SIGKILL) } }
        XCTAssertFalse(r.timedOut, "the stalled job ended by itself")
        XCTAssertNotEqual(r.status, 0)
        let since = try XCTUnwrap(stoppedAt.value, "a rank was stopped")
        let took = Date().timeIntervalSince(since)
        XCTAssertLessThan(took, timeout + 10, "ended within the timeout + 10 s")
        XCTAssert(r.stderr.contains("no progress for") && r.stderr.contains("--stall-timeout 4 s") && r.stderr.contains("during step"), r.output)
        XCTAssertTrue(r.stderr.contains("waiting in "), r.stderr)
        // The heartbeats name the stopped rank (its watchdog thread stood still with it).
        XCTAssertTrue(r.stderr.contains("not answering: rank 2 (host ") && r.stderr.contains("pid \(stopped.value)"), r.stderr)
        print("stalled rank: job ended \(String(format: "%.1f", took)) s after SIGSTOP")
    }

    /// A slow but live rank (3 s per step) with a 5 s timeout: its peers wait ~3 s per step, nobody trips.
    func testSlowRankDoesNotTripTheWatchdog() throws {
        if let why = MPIRun.unavailableReason { throw XCTSkip(why) }
        let out = fresh("slow")
        let r = try MPIRun.run(ranks: 2, arguments: args(out, steps: 3, extra: ["--stall-timeout", "5"]),
                               environment: ["ESFT_FAILPOINT": "step-delay:1:3"], timeout: 120)
        XCTAssertEqual(r.status, 0, r.output)
        XCTAssertGreaterThan(r.seconds, 9, "the delay was applied")
    }

    /// A NaN in one rank's gradient: every rank stops at that step, naming the step, the rank and the tensor;
    /// no checkpoint is written after it.
    func testNaNOnOneRankStopsEveryRankAtThatStep() throws {
        if let why = MPIRun.unavailableReason { throw XCTSkip(why) }
        let out = fresh("nan")
        let r = try MPIRun.run(ranks: 2, arguments: args(out, steps: 6, extra: ["--checkpoint-every", "1"]),
                               environment: ["ESFT_FAILPOINT": "nan-gradient:1:3"], timeout: 120)
        XCTAssertNotEqual(r.status, 0)
        XCTAssert(r.stderr.contains("step 3: the gradient norm became nan"), r.stderr)
        XCTAssert(r.stderr.contains("first non-finite gradient on rank 1: model.layers."), r.stderr)
        XCTAssertEqual(CheckpointLayout.folders(under: out).map(\.step), [2, 1], "the newest checkpoint is the last good step's")
        XCTAssertEqual(try String(contentsOf: out.appendingPathComponent("metrics.jsonl"), encoding: .utf8).split(separator: "\n").count, 2)
        XCTAssertFalse(FileManager.default.fileExists(atPath: out.appendingPathComponent(OutputLock.fileName).path), "released on the error")
    }
}

import ESFTTestSupport
import Foundation
import XCTest

/// The job scripts of cluster/ on a real one-node SLURM cluster (munged, slurmctld, slurmd started by
/// scripts/slurm-cluster.sh as its children, stopped by PID at the end), compared with plain mpirun.
/// The cluster and every job run once for the class (scripts/slurm-scenarios.sh); each test checks one
/// scenario's outputs. Every comparison is byte for byte: the same rank count, threads (1) and BLAS core
/// give identical files (docs/testing.md), so any difference is a launcher or resume bug, not rounding.
final class SlurmJobTests: XCTestCase {
    static var work: URL?
    static var run: ClusterScripts.Result?
    static var setupError: String?

    override class func setUp() {
        guard MPIRun.unavailableReason == nil else { setupError = MPIRun.unavailableReason; return }
        do {
            let dir = try Fixtures.tempDirectory("esft-slurm")
            work = dir
            run = try ClusterScripts.run(ClusterScripts.script("slurm-cluster.sh"),
                                         [dir.appendingPathComponent("cluster").path, "--",
                                          ClusterScripts.script("slurm-scenarios.sh").path, dir.path, MPIRun.esftExecutable.path])
        } catch { setupError = "\(error)" }
    }
    override class func tearDown() { if let w = work { try? FileManager.default.removeItem(at: w) } }

    /// The work directory, after the cluster ran; skips with the harness's reason when it could not start.
    func work() throws -> URL {
        if let e = Self.setupError { throw XCTSkip(e) }
        let r = try XCTUnwrap(Self.run)
        if let why = r.skipReason { throw XCTSkip(why) }
        XCTAssertFalse(r.timedOut, "the SLURM scenarios hung:\n\(r.output)")
        XCTAssertEqual(r.status, 0, "scripts/slurm-scenarios.sh failed:\n\(r.output)\n\(logs())")
        return try XCTUnwrap(Self.work)
    }

    func logs() -> String {
        guard let w = Self.work else { return "" }
        let dir = w.appendingPathComponent("cluster/log")
        return ["slurmctld.log", "slurmd.log"].compactMap { name in
            (try? String(contentsOf: dir.appendingPathComponent(name), encoding: .utf8)).map { "--- \(name) (end) ---\n\($0.suffix(3000))" }
        }.joined(separator: "\n")
    }

    func text(_ w: URL, _ path: String) throws -> String { try String(contentsOf: w.appendingPathComponent(path), encoding: .utf8) }
    func job(_ w: URL, _ name: String) throws -> [String: String] {
        ClusterScripts.jobFields(try XCTUnwrap(try text(w, "results/\(name).job").split(separator: "\n").first))
    }
    func jobLog(_ w: URL, _ name: String) throws -> String {
        let logs = try FileManager.default.contentsOfDirectory(atPath: w.appendingPathComponent("logs").path)
        let file = try XCTUnwrap(logs.first { $0.hasPrefix("\(name)-") }, "no log for \(name) in \(logs)")
        return try text(w, "logs/\(file)")
    }
    func assertSameFile(_ w: URL, _ a: String, _ b: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let x = try Data(contentsOf: w.appendingPathComponent(a)), y = try Data(contentsOf: w.appendingPathComponent(b))
        XCTAssertFalse(x.isEmpty, "\(a) is empty", file: file, line: line)
        XCTAssertTrue(x == y, "\(a) (\(x.count) bytes) differs from \(b) (\(y.count) bytes)", file: file, line: line)
    }

    func testScoreJobEqualsMpirun() throws {
        let w = try work()
        XCTAssertEqual(try text(w, "results/score.status").trimmingCharacters(in: .whitespacesAndNewlines), "0")
        XCTAssertEqual(try job(w, "score")["JobState"], "COMPLETED")
        XCTAssertEqual(try job(w, "score")["NumTasks"], "2")
        try assertSameFile(w, "sbatch/score/scores.json", "mpirun/score/scores.json")
        try assertSameFile(w, "sbatch/score/experts.json", "mpirun/score/experts.json")
    }

    func testTrainJobEqualsMpirun() throws {
        let w = try work()
        XCTAssertEqual(try job(w, "train")["JobState"], "COMPLETED")
        let log = try jobLog(w, "train")
        // Ranks and threads came from SLURM's variables: 2 tasks on a 2-CPU node → 1 thread each.
        XCTAssertTrue(log.contains("2 ranks, 1 threads each"), log)
        XCTAssertTrue(log.contains("PASS  allToAllV bandwidth"), "esft mpi-check ran under srun first:\n\(log)")
        try assertSameFile(w, "sbatch/train/trained.safetensors", "mpirun/train/trained.safetensors")
        let steps = try text(w, "sbatch/train/metrics.jsonl").split(separator: "\n").count
        XCTAssertEqual(steps, 6)
    }

    func testPipelineChainEqualsMpirun() throws {
        let w = try work()
        XCTAssertEqual(try text(w, "results/pipeline.status").trimmingCharacters(in: .whitespacesAndNewlines), "0")
        let jobs = try text(w, "results/pipeline.job").split(separator: "\n").map(ClusterScripts.jobFields)
            .sorted { Int($0["JobId"] ?? "") ?? 0 < Int($1["JobId"] ?? "") ?? 0 }
        XCTAssertEqual(jobs.map { $0["JobName"] ?? "" }, ["esft-score", "esft-train", "esft-export"])
        XCTAssertEqual(jobs.map { $0["JobState"] ?? "" }, ["COMPLETED", "COMPLETED", "COMPLETED"])
        // afterok: each job started no earlier than the previous one ended (timestamps in whole seconds).
        for (prev, next) in zip(jobs, jobs.dropFirst()) {
            XCTAssertGreaterThanOrEqual(try XCTUnwrap(next["StartTime"]), try XCTUnwrap(prev["EndTime"]), "\(next["JobName"]!) after \(prev["JobName"]!)")
        }
        try assertSameFile(w, "sbatch/pipeline/select/experts.json", "mpirun/score/experts.json")
        try assertSameFile(w, "sbatch/pipeline/train/trained.safetensors", "mpirun/train/trained.safetensors")
        let exported = try FileManager.default.contentsOfDirectory(atPath: w.appendingPathComponent("mpirun/export").path).sorted()
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: w.appendingPathComponent("sbatch/pipeline/export").path).sorted(), exported)
        XCTAssertTrue(exported.contains("config.json"), "\(exported)")
        for f in exported { try assertSameFile(w, "sbatch/pipeline/export/\(f)", "mpirun/export/\(f)") }
    }

    func testFailedRankIsReportedAsFailed() throws {
        let w = try work()
        XCTAssertNotEqual(try text(w, "results/failure.status").trimmingCharacters(in: .whitespacesAndNewlines), "0",
                          "sbatch --wait returns the failed job's status")
        let j = try job(w, "failure")
        XCTAssertEqual(j["JobState"], "FAILED", "\(j)")
        XCTAssertNotEqual(j["ExitCode"], "0:0")
        let log = try jobLog(w, "failure")
        XCTAssertTrue(log.contains("esft: rank 1 of 2: error"), log)
    }

    /// A rank stopped with SIGSTOP while training under `--stall-timeout 4`: its peer's watchdog aborts the job, which
    /// SLURM records as FAILED within the timeout + 10 s, the log naming what it waited in.
    func testStalledRankFailsTheJobInBoundedTime() throws {
        let w = try work()
        let j = try job(w, "stall")
        XCTAssertEqual(j["JobState"], "FAILED", "\(j)")
        let seconds = try XCTUnwrap(Double(try text(w, "results/stall.seconds").trimmingCharacters(in: .whitespacesAndNewlines)))
        XCTAssertLessThan(seconds, 14, "ended within the timeout + 10 s of the SIGSTOP")
        let log = try jobLog(w, "stall")
        XCTAssertTrue(log.contains("no progress for") && log.contains("--stall-timeout 4 s"), log)
        XCTAssertTrue(log.contains("not answering: rank 1 (host "), "the stopped task is named:\n\(log)")
        print("SLURM stalled rank: job FAILED \(seconds) s after the SIGSTOP")
    }

    /// Preempted while training (SIGTERM from `scontrol requeue`, or USR1 as before a time limit, after which
    /// the script requeues itself), the job writes a checkpoint, is requeued, resumes and ends with the
    /// uninterrupted run's weights.
    func assertRequeued(_ name: String) throws {
        let w = try work()
        if let skip = try? text(w, "results/requeue.skip") { throw XCTSkip(skip) }
        let j = try job(w, name)
        XCTAssertEqual(j["JobState"], "COMPLETED", "\(j)")
        XCTAssertEqual(j["Restarts"], "1", "requeued exactly once: \(j)")
        let after = Int(try text(w, "results/\(name).interrupted-after").trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
        XCTAssertTrue((1..<300).contains(after), "interrupted mid-run (after \(after) of 300 steps: scripts/slurm-scenarios.sh)")
        let log = try jobLog(w, name)
        XCTAssertTrue(log.contains("esft train: preempted"), log)
        XCTAssertTrue(log.contains("esft train: resuming from"), "the second start resumed from a checkpoint:\n\(log)")
        XCTAssertTrue(log.contains("start 1 on"), "the script ran a second time:\n\(log)")
        try assertSameFile(w, "sbatch/\(name)/trained.safetensors", "mpirun/long/trained.safetensors")
    }
    func testRequeueBySIGTERMResumesFromCheckpoint() throws { try assertRequeued("requeue-term") }
    func testUSR1BeforeTimeLimitCheckpointsAndRequeues() throws { try assertRequeued("requeue-usr1") }
}

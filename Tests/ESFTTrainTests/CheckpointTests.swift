import ESFTHDF5
import ESFTKernels
import ESFTStore
import ESFTTestSupport
import Foundation
import XCTest

/// Checkpoints and resume, against the uninterrupted run: bitwise on the same rank count (the same
/// arithmetic in the same order, so the same bytes), within the multi-rank equivalence bounds when a
/// checkpoint is resumed on another rank count; after stop signals, kill -9 in the middle of a write, and
/// damaged files.
final class CheckpointTests: TrainTestCase {
    override class var tag: String { "checkpoint" }
    static let lr = 1e-4
    var esft: [String] { ["--experts", path("experts.json")] }

    struct Outcome { let status: Int32; let stdout: String; let stderr: String; let seconds: Double; let timedOut: Bool }

    /// `esft train` into `out` (not removed first: a resumed run continues there).
    func trainInto(_ out: URL, ranks: Int, _ mode: [String], steps: Int = 6, extra: [String] = [], threads: Int = 1,
                   environment: [String: String] = [:], started: (Int32) -> Void = { _ in }) throws -> Outcome {
        let args = ["train", "--model", path("model"), "--data", path("data.h5"), "--out", out.path, "--steps", "\(steps)",
                    "--batch-rows", "\(Self.rows)", "--lr", "\(Self.lr)", "--aux-alpha", "0.001", "--eval-every", "2",
                    "--threads", "\(threads)"] + mode + extra
        if ranks == 1 {
            let start = Date()
            let r = try Executables.run(Executables.esft, args, environment: environment, started: started)
            return Outcome(status: r.status, stdout: r.stdout, stderr: r.stderr, seconds: Date().timeIntervalSince(start), timedOut: false)
        }
        if let why = MPIRun.unavailableReason { throw XCTSkip(why) }
        let r = try MPIRun.run(ranks: ranks, arguments: args, environment: environment, timeout: 300, started: started)
        return Outcome(status: r.status, stdout: r.stdout, stderr: r.stderr, seconds: r.seconds, timedOut: r.timedOut)
    }

    func fresh(_ name: String) -> URL {
        let out = dir.appendingPathComponent(name)
        try? FileManager.default.removeItem(at: out)
        return out
    }

    @discardableResult
    func trainOK(_ name: String, ranks: Int, _ mode: [String], steps: Int = 6, extra: [String] = [],
                 file: StaticString = #filePath, line: UInt = #line) throws -> URL {
        let out = fresh(name)
        let r = try trainInto(out, ranks: ranks, mode, steps: steps, extra: extra)
        XCTAssertEqual(r.status, 0, "\(name): \(r.stderr)\n\(r.stdout)", file: file, line: line)
        return out
    }

    /// The folder an interrupted run leaves once it is past `step`: the checkpoints up to `step`, every
    /// metrics line it wrote (also the later ones, which a resume must drop), no final outputs.
    func interrupted(_ run: URL, at step: Int, as name: String) throws -> URL {
        let copy = fresh(name)
        try FileManager.default.copyItem(at: run, to: copy)
        for f in CheckpointLayout.folders(under: copy) where f.step > step { try FileManager.default.removeItem(at: f.url) }
        for f in ["trained.safetensors", "summary.json"] { try? FileManager.default.removeItem(at: copy.appendingPathComponent(f)) }
        return copy
    }

    func bytes(_ out: URL) throws -> Data { try Data(contentsOf: out.appendingPathComponent("trained.safetensors")) }

    /// (step, loss, val_loss) per metrics line.
    func losses(_ out: URL) throws -> [[Double]] {
        try metrics(out).map { [Double($0["step"] as! Int), $0["loss"] as! Double, ($0["val_loss"] as? Double) ?? -1] }
    }

    func checkpointStep(_ stdout: String) -> Int? {
        guard let r = stdout.range(of: #"checkpoints/step-(\d{6})\. Resume"#, options: .regularExpression) else { return nil }
        return Int(stdout[r].dropFirst("checkpoints/step-".count).prefix(6))
    }

    func testResumeIsBitwiseTheUninterruptedRun() throws {
        for (ranks, mode, name) in [(1, esft, "esft"), (2, esft, "esft"), (2, ["--full"], "full")] {
            let base = try trainOK("base-\(name)-\(ranks)", ranks: ranks, mode)
            let checkpointed = try trainOK("ckpt-\(name)-\(ranks)", ranks: ranks, mode, extra: ["--checkpoint-every", "2"])
            XCTAssertEqual(try bytes(checkpointed), try bytes(base), "\(name), \(ranks) rank(s): writing checkpoints changes nothing")
            XCTAssertEqual(CheckpointLayout.folders(under: checkpointed).map(\.step), [6, 4, 2])
            for k in [2, 4] {
                let run = try interrupted(checkpointed, at: k, as: "resumed-\(name)-\(ranks)-\(k)")
                let r = try trainInto(run, ranks: ranks, mode, extra: ["--checkpoint-every", "2", "--resume"])
                XCTAssertEqual(r.status, 0, r.stderr)
                XCTAssertTrue(r.stdout.contains("resuming from \(run.path)/checkpoints/step-00000\(k) (step \(k)"), r.stdout)
                XCTAssertTrue(r.stdout.contains("dropped \(6 - k) line(s) after step \(k)"), r.stdout)
                XCTAssertEqual(try bytes(run), try bytes(base), "\(name), \(ranks) rank(s), resumed at step \(k): trained.safetensors byte-identical")
                XCTAssertEqual(try losses(run), try losses(base), "\(name), \(ranks) rank(s), resumed at step \(k): every step's loss and val_loss identical, none twice")
            }
        }
    }

    /// A checkpoint records the rank's `--threads` (the size of its thread pool; OpenBLAS itself runs one
    /// thread), and resuming with another count says so: products split differently may round differently.
    func testResumeWithOtherThreadsRecordsAndNotesThem() throws {
        let run = try trainOK("threads-1", ranks: 1, esft, steps: 4, extra: ["--checkpoint-every", "2"])
        let first = try JSONSerialization.jsonObject(with: Data(contentsOf: run.appendingPathComponent("checkpoints/step-000002/manifest.json"))) as! [String: Any]
        XCTAssertEqual(first["threads"] as? Int, 1)
        let resumed = try interrupted(run, at: 2, as: "threads-1-to-2")
        let r = try trainInto(resumed, ranks: 1, esft, steps: 4, extra: ["--checkpoint-every", "2", "--resume"], threads: 2)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("the checkpoint ran 1 rank(s) × 1 thread(s)") && r.stdout.contains("this run has 1 × 2"), r.stdout)
        let next = try JSONSerialization.jsonObject(with: Data(contentsOf: resumed.appendingPathComponent("checkpoints/step-000004/manifest.json"))) as! [String: Any]
        XCTAssertEqual(next["threads"] as? Int, 2, "the resumed run's checkpoint records its own --threads")
    }

    /// Over 6 AdamW steps the resharded continuation may differ from the R-rank one by summation order
    /// only: the bound is TrainEquivalenceTests' (c = 0.05 of one lr-sized step per step; see there).
    func testReshardTwoToThreeAndThreeToOne() throws {
        let bound = 0.05 * Self.lr * 6
        for (from, to) in [(2, 3), (3, 1)] {
            let run = try trainOK("reshard-\(from)", ranks: from, ["--full"], extra: ["--checkpoint-every", "3"])
            let resumed = try interrupted(run, at: 3, as: "reshard-\(from)-to-\(to)")
            let r = try trainInto(resumed, ranks: to, ["--full"], extra: ["--resume"])
            XCTAssertEqual(r.status, 0, r.stderr)
            XCTAssertTrue(r.stdout.contains("written by \(from) rank(s), resharded onto \(to)"), r.stdout)
            let a = try trained(Run(out: run, stdout: "", stderr: "", status: 0)), b = try trained(Run(out: resumed, stdout: "", stderr: "", status: 0))
            XCTAssertEqual(Set(a.keys), Set(b.keys))
            var worst = 0.0
            for (name, x) in a {
                let diff = Double(zip(x, b[name]!).reduce(0) { max($0, abs($1.0 - $1.1)) })
                worst = max(worst, diff)
                XCTAssertLessThanOrEqual(diff, bound, "\(from)→\(to) ranks: \(name) differs by \(diff / Self.lr) lr")
            }
            // Losses: fp64 sums of ~300 terms of values a few fp32 ulps apart (TrainEquivalenceTests).
            for (x, y) in zip(try losses(run), try losses(resumed)) {
                XCTAssertEqual(x[0], y[0])
                XCTAssertLessThanOrEqual(abs(x[1] - y[1]) / x[1], 1e-6, "\(from)→\(to): loss at step \(x[0])")
            }
            print("reshard \(from)→\(to): worst weight difference \(worst / Self.lr) lr")
        }
    }

    /// SIGTERM to a single process, SIGUSR1 to mpirun (which forwards it to every rank): the run stops at a
    /// step boundary with a checkpoint and status 75, and resuming it gives the uninterrupted bytes.
    func testStopSignalWritesACheckpointThatResumesBitwise() throws {
        let steps = 120   // a tiny step takes ~20 ms: the signal comes long before the end
        for (ranks, signal) in [(1, SIGTERM), (2, SIGUSR1)] {
            let base = try trainOK("signal-base-\(ranks)", ranks: ranks, esft, steps: steps)
            let out = fresh("signal-\(ranks)")
            let metricsPath = out.appendingPathComponent("metrics.jsonl").path
            let r = try trainInto(out, ranks: ranks, esft, steps: steps) { pid in
                DispatchQueue.global().async {
                    // Signal once two steps are logged (the run is well inside its loop).
                    let deadline = Date().addingTimeInterval(120)
                    while Date() < deadline {
                        if let text = try? String(contentsOfFile: metricsPath, encoding: .utf8), text.split(separator: "\n").count >= 2 { break }
                        usleep(5_000)
                    }
                    kill(pid, signal)
                }
            }
            XCTAssertEqual(r.status, 75, "\(ranks) rank(s): exit status after a stop signal\n\(r.stderr)\n\(r.stdout)")
            let k = try XCTUnwrap(checkpointStep(r.stdout), "the preemption line names the checkpoint: \(r.stdout)")
            XCTAssertLessThan(k, steps)
            XCTAssertTrue(r.stdout.contains("preempted by \(signal == SIGTERM ? "SIGTERM" : "SIGUSR1") after step \(k)"), r.stdout)
            XCTAssertEqual(CheckpointLayout.folders(under: out).map(\.step), [k])
            XCTAssertEqual(try losses(out).count, k, "every finished step is logged")
            let resumed = try trainInto(out, ranks: ranks, esft, steps: steps, extra: ["--resume"])
            XCTAssertEqual(resumed.status, 0, resumed.stderr)
            XCTAssertEqual(try bytes(out), try bytes(base), "\(ranks) rank(s): stopped at step \(k) and resumed = uninterrupted")
            XCTAssertEqual(try losses(out), try losses(base))
        }
    }

    /// Rank 1 kills itself (SIGKILL) in the middle of writing the step-4 checkpoint: the job ends, the
    /// half-written checkpoint is never resumed from, and resuming from step 2 gives the uninterrupted bytes.
    func testKillDuringACheckpointWriteThenResume() throws {
        let base = try trainOK("kill-base", ranks: 2, esft)
        let out = fresh("kill")
        let r = try trainInto(out, ranks: 2, esft, extra: ["--checkpoint-every", "2"],
                              environment: ["ESFT_FAILPOINT": "checkpoint-kill:1:4:2"])
        XCTAssertFalse(r.timedOut)
        XCTAssertNotEqual(r.status, 0, "a killed rank fails the job")
        // The issue's liveness bound: no rank may wait in a collective for a dead peer (measured ≈ 2 s).
        XCTAssertLessThan(r.seconds, 30, "the job came down within 30 s of the kill")
        let folders = CheckpointLayout.folders(under: out)
        XCTAssertEqual(folders.map(\.step), [4, 2])
        XCTAssertEqual(folders.map(\.complete), [false, true], "step 4 has no manifest")
        let inspect = try Executables.esft(["inspect", folders[0].url.path])
        XCTAssertNotEqual(inspect.status, 0)
        XCTAssertTrue(inspect.stderr.contains("incomplete"), inspect.stderr)
        let resumed = try trainInto(out, ranks: 2, esft, extra: ["--checkpoint-every", "2", "--resume"])
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        XCTAssertTrue(resumed.stdout.contains("step-000004: incomplete (no manifest), ignored"), resumed.stdout)
        XCTAssertTrue(resumed.stdout.contains("resuming from \(out.path)/checkpoints/step-000002"), resumed.stdout)
        XCTAssertEqual(try bytes(out), try bytes(base))
        XCTAssertEqual(try losses(out), try losses(base))
        XCTAssertEqual(CheckpointLayout.folders(under: out).map(\.complete), [true, true, true], "step 4 rewritten, no leftovers")
    }

    /// A damaged newest checkpoint (bytes flipped, truncated, a file missing) is reported by name and the
    /// next older one used; a checkpoint of another job stops the run naming the option.
    func testDamagedCheckpointsFallBackAndForeignOnesStop() throws {
        let base = try trainOK("damage-base", ranks: 1, esft)
        let run = try trainOK("damage-run", ranks: 1, esft, extra: ["--checkpoint-every", "2"])
        let rankFile = "checkpoints/step-000004/rank-00000-of-00001.h5"
        let damages: [(String, (URL) throws -> Void)] = [
            ("flipped", { f in
                // One bit inside an AdamW moment's data (where the dataset's bytes start, plus 37).
                let at = UInt64(try XCTUnwrap(try H5File.openReadOnly(f.path).dataset("exp_avg/model.layers.1.mlp.experts.5.up_proj.weight").offset) + 37)
                let h = try FileHandle(forUpdating: f)
                try h.seek(toOffset: at)
                let b = try h.read(upToCount: 1)![0]
                try h.seek(toOffset: at)
                try h.write(contentsOf: Data([b ^ 0x40]))
                try h.close()
            }),
            ("truncated", { f in XCTAssertEqual(truncate(f.path, 5000), 0) }),
            ("missing", { f in try FileManager.default.removeItem(at: f) }),
        ]
        for (what, damage) in damages {
            let copy = try interrupted(run, at: 4, as: "damage-\(what)")
            try damage(copy.appendingPathComponent(rankFile))
            let r = try trainInto(copy, ranks: 1, esft, extra: ["--resume"])
            XCTAssertEqual(r.status, 0, "\(what): \(r.stderr)")
            XCTAssertTrue((r.stdout + r.stderr).contains("step-000004"), "\(what): the damaged checkpoint is named\n\(r.stdout)\n\(r.stderr)")
            XCTAssertTrue(r.stdout.contains("resuming from \(copy.path)/checkpoints/step-000002"), "\(what): \(r.stdout)")
            XCTAssertEqual(try bytes(copy), try bytes(base), "\(what): resumed from step 2 = uninterrupted")
        }
        // Another job's checkpoint: the run stops before training, naming what differs.
        for (extra, mode, expected) in [(["--lr", "2e-4"], esft, "--lr"), (["--batch-rows", "4"], esft, "--batch-rows"),
                                        ([], ["--full"], "--experts/--full")] {
            let copy = try interrupted(run, at: 4, as: "foreign")
            var args = extra
            args += ["--resume"]
            let r = try trainInto(copy, ranks: 1, mode, extra: args)
            XCTAssertNotEqual(r.status, 0)
            XCTAssertTrue(r.stderr.contains(expected), "\(expected): \(r.stderr)")
        }
        // --resume needs a checkpoint; --resume auto starts from scratch without one.
        let empty = fresh("no-checkpoint")
        let strict = try trainInto(empty, ranks: 1, esft, extra: ["--resume"])
        XCTAssertNotEqual(strict.status, 0)
        XCTAssertTrue(strict.stderr.contains("no complete checkpoint"), strict.stderr)
        let auto = try trainInto(fresh("auto"), ranks: 1, esft, extra: ["--resume", "auto"])
        XCTAssertEqual(auto.status, 0, auto.stderr)
        XCTAssertTrue(auto.stdout.contains("starting at step 0"), auto.stdout)
        XCTAssertEqual(try bytes(dir.appendingPathComponent("auto")), try bytes(base))
    }

    /// `esft export --trained CHECKPOINT` equals the export of trained.safetensors at the same step; `esft
    /// inspect` verifies a checkpoint; --keep and --keep-best delete only what they should.
    func testExportInspectAndRetention() throws {
        let run = try trainOK("retention", ranks: 1, esft, extra: ["--checkpoint-every", "2", "--keep", "1", "--keep-best"])
        let vals = try losses(run).filter { $0[2] >= 0 }
        let best = Int(vals.min { $0[2] < $1[2] }![0])
        XCTAssertEqual(Set(CheckpointLayout.folders(under: run).map(\.step)), Set([6, best]), "the newest and the best by val_loss")
        let last = run.appendingPathComponent("checkpoints/step-000006")
        let inspect = try Executables.esft(["inspect", last.path])
        XCTAssertEqual(inspect.status, 0, inspect.stderr)
        XCTAssertTrue(inspect.stdout.contains("every array matches its checksum (45 arrays)"), inspect.stdout)
        let fromCheckpoint = fresh("export-checkpoint"), fromFile = fresh("export-file")
        for (out, source) in [(fromCheckpoint, last.path), (fromFile, run.appendingPathComponent("trained.safetensors").path)] {
            let r = try Executables.esft(["export", path("model"), out.path, "--trained", source])
            XCTAssertEqual(r.status, 0, r.stderr)
        }
        let files = try FileManager.default.contentsOfDirectory(atPath: fromFile.path).sorted()
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: fromCheckpoint.path).sorted(), files)
        for f in files {
            XCTAssertEqual(try Data(contentsOf: fromCheckpoint.appendingPathComponent(f)), try Data(contentsOf: fromFile.appendingPathComponent(f)), f)
        }
    }

    /// The always-on variant of scripts/fault-injection.sh: three random kill -9 points over 1–3 ranks,
    /// each resumed to the end and compared byte for byte with the uninterrupted run.
    func testRandomKillsResumeToTheUninterruptedBytes() throws {
        if let why = MPIRun.unavailableReason { throw XCTSkip(why) }
        let script = Self.configsDir.deletingLastPathComponent().appendingPathComponent("scripts/fault-injection.sh")
        let r = try Executables.run(URL(fileURLWithPath: "/bin/bash"), [script.path, "3"],
                                    environment: ["ESFT": Executables.esft.path, "STEPS": "20", "SEED": "11"])
        print(r.stdout)
        XCTAssertEqual(r.status, 0, "\(r.stdout)\n\(r.stderr)")
        XCTAssertTrue(r.stdout.contains("identical: 3/3"), r.stdout)
    }
}

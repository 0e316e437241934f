import ESFTStore
import ESFTTestSupport
import Foundation
import XCTest

/// A small tmpfs this test mounts (root only; skipped otherwise) and unmounts again, also on failure.
final class SmallFilesystem {
    let url: URL
    private var mounted = false

    init(megabytes: Int) throws {
        url = try Fixtures.tempDirectory("esft-small-fs")
        let r = try Executables.run(URL(fileURLWithPath: "/bin/mount"), ["-t", "tmpfs", "-o", "size=\(megabytes)m", "tmpfs", url.path])
        guard r.status == 0 else {
            try? FileManager.default.removeItem(at: url)
            throw XCTSkip("mounting a \(megabytes) MiB tmpfs needs root (CAP_SYS_ADMIN): \(r.stderr.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
        mounted = true
    }

    /// Fills the file system with a file until `free` bytes are left.
    func fill(leaving free: Int) throws {
        var st = statvfs()
        guard statvfs(url.path, &st) == 0 else { throw XCTSkip("statvfs \(url.path) failed") }
        let available = Int(st.f_bavail) * Int(st.f_frsize)
        let size = max(0, available - free)
        let filler = url.appendingPathComponent("filler")
        _ = FileManager.default.createFile(atPath: filler.path, contents: Data(count: size))
    }

    func unfill() { try? FileManager.default.removeItem(at: url.appendingPathComponent("filler")) }

    /// Names in the file system's root other than the filler (what a failed command left behind).
    func leftovers(in dir: URL? = nil) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: (dir ?? url).path)) ?? []).filter { $0 != "filler" }.sorted()
    }

    func unmount() {
        guard mounted else { return }
        mounted = false
        let r = try? Executables.run(URL(fileURLWithPath: "/bin/umount"), [url.path])
        if r?.status != 0 { _ = try? Executables.run(URL(fileURLWithPath: "/bin/umount"), ["-l", url.path]) }
        try? FileManager.default.removeItem(at: url)
    }

    deinit { unmount() }
}

/// A full disk (ENOSPC) under every writer: a clear error, a non-zero exit, nothing half-written under a final
/// name; during checkpoints the newest complete one survives (--keep never deletes it) and resumes to the
/// uninterrupted run's bytes.
final class FullDiskTests: TrainTestCase {
    override class var tag: String { "full-disk" }

    func trainArgs(_ out: URL, steps: Int, extra: [String] = []) -> [String] {
        ["train", "--model", path("model"), "--data", path("data.h5"), "--out", out.path, "--steps", "\(steps)",
         "--batch-rows", "\(Self.rows)", "--lr", "1e-4", "--threads", "1", "--experts", path("experts.json")] + extra
    }

    func testCheckpointsOnAFullDisk() throws {
        let steps = 6
        let base = dir.appendingPathComponent("full-disk-base")
        let b = try Executables.esft(trainArgs(base, steps: steps))
        XCTAssertEqual(b.status, 0, b.stderr)
        // One checkpoint of the tiny model is ~0.4 MB: room for two, not three.
        let fs = try SmallFilesystem(megabytes: 4)
        defer { fs.unmount() }
        try fs.fill(leaving: 1_000_000)
        let out = fs.url.appendingPathComponent("run")
        let r = try Executables.esft(trainArgs(out, steps: steps, extra: ["--checkpoint-every", "1", "--keep", "2"]))
        XCTAssertEqual(r.status, 1, "\(r.stdout)\n\(r.stderr)")
        XCTAssert(r.stderr.contains("the checkpoint was not written") && r.stderr.contains("No space left on device"), r.stderr)
        let folders = CheckpointLayout.folders(under: out)
        XCTAssertEqual(folders.map(\.complete), [true, true], "the two complete ones, nothing of the failed one: \(folders.map(\.url.lastPathComponent))")
        let newest = try XCTUnwrap(folders.first).url
        let inspect = try Executables.esft(["inspect", newest.path])
        XCTAssertEqual(inspect.status, 0, inspect.stderr)
        XCTAssertFalse(fs.leftovers(in: out).contains { $0.contains(".tmp-") || $0 == "trained.safetensors" }, "\(fs.leftovers(in: out))")
        // Space again: --resume continues from the newest complete checkpoint to the uninterrupted bytes.
        fs.unfill()
        let resumed = try Executables.esft(trainArgs(out, steps: steps, extra: ["--checkpoint-every", "1", "--keep", "2", "--resume"]))
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        XCTAssertEqual(try Data(contentsOf: out.appendingPathComponent("trained.safetensors")),
                       try Data(contentsOf: base.appendingPathComponent("trained.safetensors")))
    }

    /// On 2 ranks the error is agreed on before the manifest: every rank reports it and exits, none waits.
    func testCheckpointOnAFullDiskEndsEveryRank() throws {
        if let why = MPIRun.unavailableReason { throw XCTSkip(why) }
        let fs = try SmallFilesystem(megabytes: 4)
        defer { fs.unmount() }
        try fs.fill(leaving: 1_000_000)
        let out = fs.url.appendingPathComponent("run2")
        let r = try MPIRun.run(ranks: 2, arguments: trainArgs(out, steps: 20, extra: ["--checkpoint-every", "1"]), timeout: 120)
        XCTAssertFalse(r.timedOut)
        XCTAssertNotEqual(r.status, 0)
        for rank in 0..<2 {
            XCTAssert(r.stderr.contains("esft: rank \(rank) of 2: error: step ") && r.stderr.contains("the checkpoint was not written"), r.output)
        }
        let folders = CheckpointLayout.folders(under: out)
        XCTAssertFalse(folders.isEmpty)
        XCTAssert(folders.allSatisfy(\.complete), "no incomplete folder left: \(folders.map(\.url.lastPathComponent))")
    }

    /// The final outputs of train, and the outputs of init, import, export and data prepare, with 8 KiB free.
    func testEveryWriterOnAFullDisk() throws {
        let fs = try SmallFilesystem(megabytes: 2)
        defer { fs.unmount() }
        let hf = dir.appendingPathComponent("hf")
        if !FileManager.default.fileExists(atPath: hf.path) {
            XCTAssertEqual(try Executables.esft(["export", path("model"), hf.path]).status, 0)
        }
        let chat = dir.appendingPathComponent("chat.jsonl")
        let lines = (0..<400).map { i in #"{"messages": [{"role": "user", "content": "question \#(i) of many"}, {"role": "assistant", "content": "answer \#(i)"}]}"# }
        try Data((lines.joined(separator: "\n") + "\n").utf8).write(to: chat)
        let config = Self.configsDir.appendingPathComponent("tiny.json").path
        let out = fs.url
        let commands: [(String, [String], String)] = [
            ("train", trainArgs(out.appendingPathComponent("run"), steps: 2), "run"),
            ("init", ["init", config, out.appendingPathComponent("init").path], "init"),
            ("import", ["import", hf.path, out.appendingPathComponent("imported").path], "imported"),
            ("export", ["export", path("model"), out.appendingPathComponent("exported").path], "exported"),
            ("data prepare", ["data", "prepare", "--tokenizer", "bytes", "--input", chat.path, "--seq-len", "64",
                              "--out", out.appendingPathComponent("data.h5").path], "data.h5"),
        ]
        for (name, args, output) in commands {
            fs.unfill()
            try fs.fill(leaving: 8192)
            let r = try Executables.esft(args)
            XCTAssertEqual(r.status, 1, "\(name): \(r.stdout)\n\(r.stderr)")
            // In the writer's words: HDF5's errno 28, Foundation's "no space left", or init's check before it starts.
            let text = r.stderr.lowercased()
            XCTAssert(text.contains("no space left") || text.contains("errno = 28") || r.stderr.contains("free on \(out.path)"), "\(name): \(r.stderr)")
            XCTAssertFalse(r.stderr.contains("Program crashed"), "\(name) crashed")
            let left = fs.leftovers()
            if name == "train" {
                // --out itself stays (it holds run.json and metrics.jsonl, written before the disk ran out), but no
                // final output is there under its name, and no temporary.
                let inside = fs.leftovers(in: out.appendingPathComponent(output))
                XCTAssertFalse(inside.contains("trained.safetensors") || inside.contains("summary.json") || inside.contains { $0.contains(".tmp-") },
                               "train left \(inside)")
                try? FileManager.default.removeItem(at: out.appendingPathComponent(output))
            } else {
                XCTAssertEqual(left, [], "\(name) left \(left)")
            }
        }
    }
}

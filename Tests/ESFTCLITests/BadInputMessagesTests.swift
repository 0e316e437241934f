import ESFTHDF5
import ESFTTestSupport
import Foundation
import XCTest

/// Class 5 of issue 15: messages that help. Misspelt options get a suggestion, JSON syntax errors a line
/// and column, values are shown as written (the string "0" quoted, true as true), Foundation's and HDF5's
/// failures are said in words (read-only, an existing file, HDF5's own stack), a seq_len attribute that
/// disagrees with the arrays is blamed on the attribute, and --threads 0 means the same in every command.
final class BadInputMessagesTests: BadInputTestCase {
    override class var tag: String { "messages" }

    func testMisspeltOptionsGetASuggestion() throws {
        let model = path("model"), data = path("data.h5")
        try refuse(["train", "--model", model, "--data", data, "--full", "--out", path("run"), "--batch_rows", "2"],
                   mentions: ["unknown option --batch_rows; did you mean --batch-rows?"])
        try refuse(["train", "--modle", model, "--data", data, "--full", "--out", path("run")], mentions: ["did you mean --model?"])
        try refuse(["score", "--model", model, "--data", data, "--tokens", "16", "--out", path("s.json"), "--batch_rows", "2"],
                   mentions: ["did you mean --batch-rows?"])
        try refuse(["data", "prepare", "--tokenizer", "bytes", "--input", path("chat.jsonl"), "--seq_len", "16", "--out", path("d.h5")],
                   mentions: ["did you mean --seq-len?"])
        try refuse(["init", Self.tinyConfig.path, path("m"), "--expert_shards", "2"], mentions: ["did you mean --expert-shards?"])
        try refuse(["select", "--scores", path("scores.json"), "--method", "gate", "--top_k", "2", "--out", path("e.json")],
                   mentions: ["did you mean --top-k?"])
    }

    func testJSONErrorsSayWhereAndValuesKeepTheirType() throws {
        try Data("{\n  \"model_type\": \"deepseek_v2\",\n  \"vocab_size\": 259\n  \"hidden_size\": 64\n}\n".utf8).write(to: dir.appendingPathComponent("syntax.json"))
        try refuse(["init", path("syntax.json"), path("m")], mentions: [path("syntax.json"), "line 4, column"])
        try Data("{\"steps\": 2,, }".utf8).write(to: dir.appendingPathComponent("train-syntax.json"))
        let train = ["train", "--model", path("model"), "--data", path("data.h5"), "--full", "--out", path("run"), "--config"]
        try refuse(train + [path("train-syntax.json")], mentions: [path("train-syntax.json"), "line 1, column"])
        for (i, (json, shown)) in [(#"{"steps": "0"}"#, #"got "0""#), (#"{"steps": true}"#, "got true"), (#"{"lr": "fast"}"#, #"got "fast""#)].enumerated() {
            try Data(json.utf8).write(to: dir.appendingPathComponent("train-\(i).json"))
            try refuse(train + [path("train-\(i).json")], mentions: [path("train-\(i).json"), shown])
        }
        try refuse(["train", "--model", path("model"), "--data", path("data.h5"), "--full", "--out", path("run"), "--steps", "x2"],
                   mentions: ["--steps", "got 'x2'"])
        let typed = try config("typed.json", ["hidden_size": "64"])
        try refuse(["init", typed, path("m")], mentions: [typed, "hidden_size", #""64""#])
        let flag = try config("flag.json", ["attention_bias": 1])
        try refuse(["init", flag, path("m")], mentions: [flag, "attention_bias", "got 1"])
    }

    func testFileSystemFailuresAreSaidInWords() throws {
        // --out is an existing file, or lies under one.
        try Data("x".utf8).write(to: dir.appendingPathComponent("file"))
        try refuse(["train", "--model", path("model"), "--data", path("data.h5"), "--full", "--out", path("file")],
                   mentions: [path("file"), "is an existing file"])
        try refuse(["select", "--scores", path("scores.json"), "--method", "gate", "--top-k", "2", "--out", path("file/e.json")],
                   mentions: [path("file/e.json"), "is an existing file"])
        try refuse(["init", Self.tinyConfig.path, path("file")], mentions: [path("file"), "already exists"])
        // HDF5's own error stack, in the message: a truncated dataset.
        let bytes = try Data(contentsOf: dir.appendingPathComponent("data.h5"))
        try bytes.prefix(bytes.count / 2).write(to: dir.appendingPathComponent("truncated.h5"))
        try refuse(["train", "--model", path("model"), "--data", path("truncated.h5"), "--full", "--out", path("run")],
                   mentions: [path("truncated.h5"), "(HDF5: truncated file"])
        // A seq_len attribute that disagrees with the arrays is blamed on the attribute.
        try FileManager.default.copyItem(atPath: path("data.h5"), toPath: path("seq.h5"))
        let f = try H5File.openReadWrite(path("seq.h5"))
        try f.attributes.set("seq_len", Int64(20))
        try f.close()
        try refuse(["train", "--model", path("model"), "--data", path("seq.h5"), "--full", "--out", path("run")],
                   mentions: [path("seq.h5"), "seq_len: the attribute says 20", "rows of 16"])
    }

    /// A read-only file system (a read-only tmpfs when this process may mount one, else a directory without write
    /// permission when not root): every writing command says so, naming its output, never NSCocoaErrorDomain.
    func testReadOnlyOutputs() throws {
        let ro = dir.appendingPathComponent("ro")
        try FileManager.default.createDirectory(at: ro, withIntermediateDirectories: true)
        let mounted = (try? Executables.run(URL(fileURLWithPath: "/bin/mount"), ["-t", "tmpfs", "-o", "ro,size=64m", "tmpfs", ro.path]))?.status == 0
        defer { if mounted { _ = try? Executables.run(URL(fileURLWithPath: "/bin/umount"), [ro.path]) } }
        if !mounted {
            guard getuid() != 0 else { throw XCTSkip("cannot mount a read-only tmpfs, and root writes into any directory") }
            try FileManager.default.setAttributes([.posixPermissions: 0o555], ofItemAtPath: ro.path)
        }
        let reason = mounted ? "read-only" : "permission denied"
        let out = ro.appendingPathComponent("out").path
        try refuse(["init", Self.tinyConfig.path, out], mentions: [out, reason])
        try refuse(["export", path("model"), out], mentions: [out, reason])
        try refuse(["train", "--model", path("model"), "--data", path("data.h5"), "--full", "--out", out], mentions: [out, reason])
        try refuse(["select", "--scores", path("scores.json"), "--method", "gate", "--top-k", "2", "--out", out + ".json"], mentions: [out + ".json", reason])
        try refuse(["score", "--model", path("model"), "--data", path("data.h5"), "--tokens", "16", "--threads", "1", "--out", out + ".json"],
                   mentions: [out + ".json", reason])
        try refuse(["data", "prepare", "--tokenizer", "bytes", "--input", path("chat.jsonl"), "--seq-len", "16", "--out", out + ".h5"],
                   mentions: [out + ".h5", mounted ? "Read-only file system" : "Permission denied"])
    }

    /// --threads 0 is "the cores this process may use" in every command that takes --threads (docs/cli.md).
    func testThreadsZeroMeansTheDefaultEverywhere() throws {
        let fixture = Fixtures.models.appendingPathComponent("group_bf16_tied").path
        let runs: [[String]] = [
            ["train", "--model", path("model"), "--data", path("data.h5"), "--full", "--out", path("t0"), "--steps", "1", "--batch-rows", "2", "--threads", "0"],
            ["score", "--model", path("model"), "--data", path("data.h5"), "--tokens", "16", "--out", path("t0.json"), "--threads", "0"],
            ["forward", "--model", fixture, "--tokens", fixture + "/inputs.json", "--out", path("t0.safetensors"), "--threads", "0"],
            ["bench", "--config", Self.tinyConfig.path, "--batch", "1", "--seq", "8", "--steps", "1", "--threads", "0"],
        ]
        for args in runs {
            let r = try Executables.esft(args)
            XCTAssertEqual(r.status, 0, "esft \(args.joined(separator: " ")): \(r.stderr)")
        }
        for command in ["train", "score", "forward", "bench"] {
            let help = try Executables.esft([command, "--help"]).stdout
            XCTAssertTrue(help.contains("0 or absent"), "esft \(command) --help does not say what --threads 0 means")
        }
    }
}

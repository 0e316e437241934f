import ESFTTestSupport
import Foundation
import XCTest

/// Class 2 of issue 15: an output that is an input (by the same path, another spelling of it, a symlink
/// or a hard link), or a directory an input lies in. Every command refuses before it starts, naming the
/// output, its option and the input; the input stays byte-identical (checked by `refuse`).
final class BadInputOutputsTests: BadInputTestCase {
    override class var tag: String { "outputs" }

    func testAnOutputEqualToAnInputIsRefusedInEveryCommand() throws {
        let model = path("model"), data = path("data.h5"), scores = path("scores.json"), experts = path("experts.json")
        try refuse(["data", "prepare", "--tokenizer", "bytes", "--input", path("chat.jsonl"), "--seq-len", "16", "--out", path("chat.jsonl")],
                   mentions: ["--out", "--input", "chat.jsonl"])
        try refuse(["select", "--scores", scores, "--method", "token", "--top-k", "1", "--out", scores], mentions: ["--out", "--scores"])
        try refuse(["score", "--model", model, "--data", data, "--tokens", "16", "--out", data], mentions: ["--out", "--data"])
        try refuse(["train", "--model", model, "--data", data, "--experts", experts, "--out", experts], mentions: ["--out", "--experts"])
        try refuse(["train", "--model", model, "--data", data, "--full", "--out", path("run"), "--save-gradients", data],
                   mentions: ["--save-gradients", "--data"])
        try refuse(["init", Self.tinyConfig.path, Self.tinyConfig.path], mentions: ["OUT_DIR", "CONFIG.json"])
        try refuse(["export", model, model], mentions: ["OUT", "MODEL_DIR"])
        try refuse(["forward", "--model", Fixtures.models.appendingPathComponent("group_bf16_tied").path, "--tokens", data, "--out", data],
                   mentions: ["--out", "--tokens"])
    }

    func testOtherSpellingsOfAnInputAreTheInput() throws {
        let scores = path("scores.json")
        let fm = FileManager.default
        try fm.createDirectory(atPath: path("sub"), withIntermediateDirectories: true)
        try fm.createSymbolicLink(atPath: path("link.json"), withDestinationPath: scores)
        try fm.linkItem(atPath: scores, toPath: path("hard.json"))
        for spelling in [path("sub/../scores.json"), path("./scores.json"), path("link.json"), path("hard.json")] {
            try refuse(["select", "--scores", scores, "--method", "gate", "--top-k", "2", "--out", spelling], mentions: ["--out", "--scores"])
        }
        // The report select writes next to --out (NAME.report.json) must not be an input either.
        try refuse(["select", "--scores", path("x.report.json"), "--method", "gate", "--top-k", "2", "--out", path("x.json")],
                   mentions: ["report", "--scores"])
    }

    func testAnOutputDirectoryHoldingAnInputIsRefused() throws {
        // export into the directory that holds the model, score's --out being the model directory itself.
        try refuse(["export", path("model"), dir.path], mentions: ["OUT", "contains the input"])
        try refuse(["score", "--model", path("model"), "--data", path("data.h5"), "--tokens", "16", "--out", path("model")],
                   mentions: ["--out", "--model"])
        // train fills --out in place: it may not be an input directory, nor hold an input under a name it writes.
        try refuse(["train", "--model", path("model"), "--data", path("data.h5"), "--full", "--out", path("model"), "--resume", "auto"],
                   mentions: ["--out", "--model"])
        try FileManager.default.createDirectory(atPath: path("run"), withIntermediateDirectories: true)
        try Data(#"{"steps": 1}"#.utf8).write(to: dir.appendingPathComponent("run/summary.json"))
        try refuse(["train", "--model", path("model"), "--data", path("data.h5"), "--full", "--out", path("run"), "--resume", "auto",
                    "--config", path("run/summary.json")], mentions: ["--out (summary.json)", "--config"])
        // ...but a training config kept in the run folder is fine (--resume lets --out be non-empty).
        try FileManager.default.moveItem(atPath: path("run/summary.json"), toPath: path("run/train.json"))
        let kept = try Executables.esft(["train", "--model", path("model"), "--data", path("data.h5"), "--full", "--out", path("run"),
                                         "--resume", "auto", "--config", path("run/train.json"), "--batch-rows", "2", "--threads", "1"])
        XCTAssertEqual(kept.status, 0, kept.stderr)
        XCTAssertEqual(try String(contentsOfFile: path("run/train.json"), encoding: .utf8), #"{"steps": 1}"#)
    }
}

import ESFTData
import ESFTTestSupport
import Foundation
import XCTest

/// `esft data prepare` and `esft tokenize`, run as a user would, including bad input.
final class DataCLITests: XCTestCase {
    var dir: URL!

    override func setUpWithError() throws {
        dir = try Fixtures.tempDirectory("esft-data-cli")
        let d = dir!
        addTeardownBlock { try? FileManager.default.removeItem(at: d) }
    }

    func file(_ name: String, _ content: String) throws -> String {
        try file(name, Data(content.utf8))
    }

    func file(_ name: String, _ content: Data) throws -> String {
        let url = dir.appendingPathComponent(name)
        try content.write(to: url)
        return url.path
    }

    let good = """
    {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]}
    {"text": "plain"}

    """

    func testPrepareWritesDatasetAndSummary() throws {
        let input = try file("in.jsonl", good)
        let out = dir.appendingPathComponent("d.h5").path
        let r = try Executables.esft(["data", "prepare", "--tokenizer", "bytes", "--input", input, "--seq-len", "32", "--out", out, "--seed", "3"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("samples: 2"), r.stdout)
        XCTAssertTrue(r.stdout.contains("rows: 1 (train 1, validation 0)"), "25 + 7 tokens fill one row exactly")
        XCTAssertTrue(r.stdout.contains("tokens: 32 (+ 0 padding)"), r.stdout)
        XCTAssertTrue(r.stdout.contains("truncated samples: 0"), r.stdout)
        let d = try TokenDataset(path: out)
        let first: [Int32] = [256] + "User: Hi\n\nAssistant: Yo".utf8.map { Int32($0) } + [257]
        XCTAssertEqual(Array((try d.allInputIds())[0..<first.count]), first)
        XCTAssertEqual(d.samples.map(\.length), [first.count, 7])
        XCTAssertEqual(d.metadata.seed, 3)
        XCTAssertEqual(d.metadata.tokenizerFingerprint, "bytes-v1")
        XCTAssertTrue(d.metadata.sourcesJSON.contains("\"file\":\"in.jsonl\""), d.metadata.sourcesJSON)
    }

    func testPrepareWithModelVocabulary() throws {
        let input = try file("in.jsonl", good)
        let model = dir.appendingPathComponent("model")
        try FileManager.default.createDirectory(at: model, withIntermediateDirectories: true)
        try Data("{\"vocab_size\": 300}".utf8).write(to: model.appendingPathComponent("config.json"))
        let out = dir.appendingPathComponent("d.h5").path
        let ok = try Executables.esft(["data", "prepare", "--tokenizer", "bytes", "--input", input, "--seq-len", "32", "--out", out, "--model", model.path])
        XCTAssertEqual(ok.status, 0, ok.stderr)
        XCTAssertEqual(try TokenDataset(path: out).metadata.vocabSize, 300)
        try Data("{\"vocab_size\": 100}".utf8).write(to: model.appendingPathComponent("config.json"))
        let out2 = dir.appendingPathComponent("e.h5").path
        let bad = try Executables.esft(["data", "prepare", "--tokenizer", "bytes", "--input", input, "--seq-len", "32", "--out", out2,
                                        "--model", model.path, "--bos-token", "1", "--eos-token", "2", "--pad-token", "3"])
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertTrue(bad.stderr.contains("in.jsonl:1: token id 115") && bad.stderr.contains("vocab_size 100"), bad.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: out2))
    }

    /// Each bad input: non-zero exit, a message naming the place, no output (and no temporary) left.
    func assertFails(_ extra: [String], input: String, mentions: [String], tokenizer: String = "bytes",
                     file f: StaticString = #filePath, line: UInt = #line) throws {
        let out = dir.appendingPathComponent("bad.h5").path
        let before = try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted()
        let r = try Executables.esft(["data", "prepare", "--tokenizer", tokenizer, "--input", input, "--seq-len", "16", "--out", out] + extra)
        XCTAssertNotEqual(r.status, 0, file: f, line: line)
        for m in mentions { XCTAssertTrue(r.stderr.contains(m), "stderr should mention \(m): \(r.stderr)", file: f, line: line) }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted(), before, "nothing left behind", file: f, line: line)
    }

    func testBadLines() throws {
        let ok = #"{"text": "a"}"#
        try assertFails([], input: try file("json.jsonl", "\(ok)\n{\"text\": \"b\"\n"), mentions: ["json.jsonl:2", "malformed JSON"])
        try assertFails([], input: try file("list.jsonl", #"{"messages": {"role": "user"}}"#), mentions: ["list.jsonl:1", "\"messages\" is not a list"])
        try assertFails([], input: try file("role.jsonl", "\(ok)\n\(ok)\n" + #"{"messages": [{"content": "q"}]}"#), mentions: ["role.jsonl:3", "messages[0].role is missing"])
        try assertFails([], input: try file("content.jsonl", #"{"messages": [{"role": "user", "content": ["q"]}, {"role": "assistant", "content": "a"}]}"#),
                        mentions: ["content.jsonl:1", "messages[0].content is not a string"])
        try assertFails([], input: try file("noans.jsonl", #"{"messages": [{"role": "user", "content": "q"}]}"#), mentions: ["noans.jsonl:1", "no assistant turn"])
        try assertFails([], input: try file("empty.jsonl", ""), mentions: ["empty.jsonl", "empty"])
        var bytes = Data("\(ok)\n{\"text\": \"".utf8); bytes.append(contentsOf: [0xFF, 0xFE]); bytes.append(Data("\"}\n".utf8))
        try assertFails([], input: try file("utf8.jsonl", bytes), mentions: ["utf8.jsonl:2", "UTF-8"])
        let allBad = try file("allbad.jsonl", "{\n[\n")
        try assertFails(["--skip-bad"], input: allBad, mentions: ["allbad.jsonl", "no usable line"])
        try assertFails([], input: try file("x.jsonl", ok), mentions: ["tok.json", "malformed"], tokenizer: try file("tok.json", "{ not json"))
        try assertFails([], input: try file("z.jsonl", ok), mentions: ["no-such-tokenizer"], tokenizer: dir.appendingPathComponent("no-such-tokenizer").path)
        try assertFails(["--bogus"], input: try file("y.jsonl", ok), mentions: ["unknown option '--bogus'"])
        let missing = try Executables.esft(["data", "prepare", "--tokenizer", "bytes", "--input", try file("w.jsonl", ok), "--seq-len", "8",
                                            "--out", dir.appendingPathComponent("no-dir/d.h5").path])
        XCTAssertNotEqual(missing.status, 0)
        XCTAssertTrue(missing.stderr.contains("no-dir does not exist"), missing.stderr)
    }

    func testSkipBadCountsLines() throws {
        let input = try file("mixed.jsonl", "{\"text\": \"a\"}\n{oops\n{\"text\": 5}\n{\"text\": \"b\"}\n")
        let out = dir.appendingPathComponent("d.h5").path
        let r = try Executables.esft(["data", "prepare", "--tokenizer", "bytes", "--input", input, "--seq-len", "8", "--out", out, "--skip-bad"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("skipped bad lines: 2"), r.stdout)
        XCTAssertTrue(r.stdout.contains("mixed.jsonl:2"), r.stdout)
        XCTAssertEqual(try TokenDataset(path: out).samples.count, 2)
    }

    func testMixDropBOSAndSplitAreReproducible() throws {
        let task = try file("task.jsonl", (0..<40).map { "{\"text\": \"task \($0)\"}" }.joined(separator: "\n"))
        let general = try file("general.jsonl", (0..<80).map { "{\"text\": \"general \($0)\"}" }.joined(separator: "\n"))
        var digests = [String]()
        for name in ["a.h5", "b.h5"] {
            let out = dir.appendingPathComponent(name).path
            let r = try Executables.esft(["data", "prepare", "--tokenizer", "bytes", "--input", task, "--input2", general, "--mix", "2:3",
                                          "--seq-len", "40", "--drop-bos", "0.5", "--validation-fraction", "0.25", "--seed", "11", "--out", out])
            XCTAssertEqual(r.status, 0, r.stderr)
            XCTAssertTrue(r.stdout.contains("samples: 100 (source 0: 40, source 1: 60)"), r.stdout)
            let d = try TokenDataset(path: out)
            XCTAssertEqual(d.validationRows.count, Int((Double(d.rows) * 0.25).rounded()))
            XCTAssertTrue(d.metadata.sourcesJSON.contains("\"mix\":\"2:3\""), d.metadata.sourcesJSON)
            digests.append(d.digest)
        }
        XCTAssertEqual(digests[0], digests[1], "same seed, same dataset")
        let bad = try Executables.esft(["data", "prepare", "--tokenizer", "bytes", "--input", task, "--input2", general, "--mix", "2-3",
                                        "--seq-len", "40", "--out", dir.appendingPathComponent("c.h5").path])
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertTrue(bad.stderr.contains("--mix must be A:B"), bad.stderr)
    }

    func testTokenizeAndDecode() throws {
        let r = try Executables.esft(["tokenize", "--tokenizer", "bytes", "--text", "hé"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(r.stdout, "[104,195,169]\n")
        let d = try Executables.esft(["tokenize", "--tokenizer", "bytes", "--decode", "--text", "[104,195,169,257]"])
        XCTAssertEqual(d.stdout, "hé\n")
        let lines = try file("lines.txt", "ab\n\nc\n")
        XCTAssertEqual(try Executables.esft(["tokenize", "--tokenizer", "bytes", "--input", lines]).stdout, "[97,98]\n[]\n[99]\n")
        let jsonl = try file("c.jsonl", good)
        let expected = "[" + "User: Hi\n\nAssistant: Yo".utf8.map { String($0) }.joined(separator: ",") + "]\n[112,108,97,105,110]\n"
        XCTAssertEqual(try Executables.esft(["tokenize", "--tokenizer", "bytes", "--input", jsonl]).stdout, expected)
        let ids = try file("ids.txt", "[97,98]\n[99]\n")
        XCTAssertEqual(try Executables.esft(["tokenize", "--tokenizer", "bytes", "--decode", "--input", ids]).stdout, "ab\nc\n")
        let bad = try Executables.esft(["tokenize", "--tokenizer", "bytes", "--decode", "--input", try file("bad.txt", "[1]\n[x]\n")])
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertTrue(bad.stderr.contains("bad.txt:2"), bad.stderr)
    }

    func testTokenizeWithFixtureTokenizerRoundTrips() throws {
        let tok = Fixtures.root.appendingPathComponent("tokenizer").path
        let r = try Executables.esft(["tokenize", "--tokenizer", tok, "--text", "Hello world, 你好"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let ids = r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        XCTAssertEqual(try Executables.esft(["tokenize", "--tokenizer", tok, "--decode", "--text", ids]).stdout, "Hello world, 你好\n")
        let direct = try HFTokenizer(contentsOf: URL(fileURLWithPath: tok)).encode("Hello world, 你好")
        XCTAssertEqual(ids, "[" + direct.map(String.init).joined(separator: ",") + "]")
    }

    /// `tokenize` adds no special tokens, so a tokenizer.json whose BOS/EOS have other names, or that has
    /// none, still tokenizes; `data prepare`, which inserts BOS/EOS, keeps its clear error for the latter.
    func testTokenizeNeedsNoSpecialTokens() throws {
        let original = try String(contentsOf: Fixtures.root.appendingPathComponent("tokenizer/tokenizer.json"), encoding: .utf8)
        let renamed = original.replacingOccurrences(of: "<｜begin▁of▁sentence｜>", with: "<|begin|>")
            .replacingOccurrences(of: "<｜end▁of▁sentence｜>", with: "<|end|>")
        var json = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(renamed.utf8)) as? [String: Any])
        json["post_processor"] = NSNull()  // no template either: nothing says which token is BOS
        json["added_tokens"] = (json["added_tokens"] as? [[String: Any]])?.filter { ($0["id"] as? Int).map { $0 > 1 } ?? true }
        let none = try file("none.json", String(decoding: try JSONSerialization.data(withJSONObject: json), as: UTF8.self))
        let other = try file("renamed.json", renamed)
        let expected = try Executables.esft(["tokenize", "--tokenizer", Fixtures.root.appendingPathComponent("tokenizer").path, "--text", "Hello world"])
        for tok in [other, none] {
            let r = try Executables.esft(["tokenize", "--tokenizer", tok, "--text", "Hello world"])
            XCTAssertEqual(r.status, 0, "\(tok): \(r.stderr)")
            XCTAssertEqual(r.stdout, expected.stdout, "the same ids as with the original names")
        }
        let prepare = try Executables.esft(["data", "prepare", "--tokenizer", none, "--input", try file("p.jsonl", good), "--seq-len", "16",
                                            "--out", dir.appendingPathComponent("none.h5").path])
        XCTAssertNotEqual(prepare.status, 0)
        XCTAssertTrue(prepare.stderr.contains("none.json") && prepare.stderr.contains("no BOS token found"), prepare.stderr)
    }
}

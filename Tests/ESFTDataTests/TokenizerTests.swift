import Foundation
import XCTest
import ESFTData

/// Parity with the Hugging Face `tokenizers` library: the fixtures under Tests/Fixtures/tokenizer
/// are written by scripts/gen_tokenizer_fixture.py (see there for what they cover).
final class TokenizerTests: XCTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../Fixtures/tokenizer").standardizedFileURL

    struct Case {
        let text: String
        let ids: [Int32]
        let idsSpecial: [Int32]?
    }

    static func loadCases(_ name: String) throws -> [Case] {
        let data = try Data(contentsOf: fixtures.appendingPathComponent(name))
        return try data.split(separator: UInt8(ascii: "\n")).map { line in
            let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(line)) as? [String: Any])
            let ids = try XCTUnwrap(object["ids"] as? [Int]).map(Int32.init)
            let special = (object["ids_special"] as? [Int]).map { $0.map(Int32.init) }
            return Case(text: try XCTUnwrap(object["text"] as? String), ids: ids, idsSpecial: special)
        }
    }

    /// Fails with the number of mismatches and the first few differences.
    func assertSameIds(_ cases: [Case], _ label: String, special: Bool = false,
                       _ encode: (String) -> [Int32], file: StaticString = #filePath, line: UInt = #line) {
        var mismatches = [String]()
        var count = 0
        for c in cases {
            guard let expected = special ? c.idsSpecial : c.ids else { continue }
            let got = encode(c.text)
            if got != expected {
                count += 1
                if mismatches.count < 5 {
                    mismatches.append("  text \(c.text.debugDescription)\n    expected \(expected)\n    got      \(got)")
                }
            }
        }
        XCTAssertEqual(count, 0, "\(label): \(count) of \(cases.count) lines differ; first ones:\n"
                       + mismatches.joined(separator: "\n"), file: file, line: line)
    }

    func assertRoundTrip(_ cases: [Case], _ label: String, _ tokenizer: HFTokenizer,
                         file: StaticString = #filePath, line: UInt = #line) {
        // Compare bytes: String == would accept canonically equivalent text.
        let failing = cases.filter { Array(tokenizer.decode(tokenizer.encode($0.text)).utf8) != Array($0.text.utf8) }
        XCTAssertEqual(failing.count, 0, "\(label): decode(encode(x)) != x for \(failing.prefix(5).map(\.text.debugDescription))",
                       file: file, line: line)
    }

    // MARK: byte tokenizer

    func testByteTokenizerRoundTripsAnyString() {
        let tokenizer = ByteTokenizer()
        for text in ["", "hello", "中文 👨‍👩‍👧‍👦 🇨🇳", "e\u{301} \u{0}\n\t", String(repeating: "ab", count: 1000)] {
            let ids = tokenizer.encode(text)
            XCTAssertEqual(ids.count, text.utf8.count)
            XCTAssertTrue(ids.allSatisfy { $0 >= 0 && $0 < 256 })
            XCTAssertEqual(Array(tokenizer.decode(ids).utf8), Array(text.utf8))
        }
    }

    func testByteTokenizerSpecialIds() {
        let tokenizer = ByteTokenizer()
        XCTAssertEqual([tokenizer.bosId, tokenizer.eosId, tokenizer.padId], [256, 257, 258])
        XCTAssertEqual(tokenizer.vocabSize, 259)
        let ids = tokenizer.encode("hi", addBos: true, addEos: true)
        XCTAssertEqual(ids, [256, 104, 105, 257])
        XCTAssertEqual(tokenizer.decode(ids + [ByteTokenizer.pad, 999, -1]), "hi")
    }

    // MARK: Hugging Face tokenizer.json

    func testMatchesHuggingFaceIdsOnEveryFixtureLine() throws {
        let tokenizer = try HFTokenizer(contentsOf: Self.fixtures.appendingPathComponent("tokenizer.json"))
        let cases = try Self.loadCases("expected.jsonl")
        XCTAssertGreaterThanOrEqual(cases.count, 2000)
        XCTAssertTrue(cases.contains { $0.text.isEmpty })
        assertSameIds(cases, "expected.jsonl") { tokenizer.encode($0) }
        assertRoundTrip(cases, "expected.jsonl", tokenizer)
    }

    func testFixtureTokenizerProperties() throws {
        let tokenizer = try HFTokenizer(contentsOf: Self.fixtures)  // directory form
        let bos = try XCTUnwrap(tokenizer.tokenId("<｜begin▁of▁sentence｜>"))
        let eos = try XCTUnwrap(tokenizer.tokenId("<｜end▁of▁sentence｜>"))
        let think = try XCTUnwrap(tokenizer.tokenId("<think>"))
        XCTAssertEqual(tokenizer.vocabSize, 6001)
        XCTAssertEqual(tokenizer.specialTokenIds, [bos, eos])
        XCTAssertEqual(tokenizer.prefixTokenIds, [bos])
        XCTAssertEqual(tokenizer.encode("hi", addSpecialTokens: true), [bos] + tokenizer.encode("hi"))
        let ids = tokenizer.encode("a<think>b<｜end▁of▁sentence｜>")
        XCTAssertTrue(ids.contains(think) && ids.last == eos)
        XCTAssertEqual(tokenizer.decode(ids, skipSpecialTokens: true), "a<think>b")
        XCTAssertEqual(tokenizer.token(bos), "<｜begin▁of▁sentence｜>")
    }

    /// Other configurations over the same merges: GPT-2 style prefix space, NFKC / NFC / NFD,
    /// Digits, every Split behavior, invert, String patterns, Oniguruma line anchors,
    /// ignore_merges, legacy merges, added-token flags, templates with BOS and EOS.
    func testMatchesHuggingFaceIdsForEveryVariant() throws {
        let directory = Self.fixtures.appendingPathComponent("variants")
        let names = try FileManager.default.contentsOfDirectory(atPath: directory.path)
            .filter { $0.hasSuffix(".json") }.sorted()
        XCTAssertEqual(names.count, 4)
        for name in names {
            let tokenizer = try HFTokenizer(contentsOf: directory.appendingPathComponent(name))
            let cases = try Self.loadCases("variants/" + name.dropLast(5) + ".jsonl")
            assertSameIds(cases, name) { tokenizer.encode($0) }
            assertSameIds(cases, name + " (special)", special: true) { tokenizer.encode($0, addSpecialTokens: true) }
        }
    }

    /// One tokenizer shared by several threads (its caches are locked) gives the same ids.
    func testConcurrentEncodingMatchesReference() throws {
        let tokenizer = try HFTokenizer(contentsOf: Self.fixtures.appendingPathComponent("tokenizer.json"))
        let cases = try Self.loadCases("expected.jsonl")
        let threads = 4
        let lock = NSLock()
        var mismatches = 0
        DispatchQueue.concurrentPerform(iterations: threads) { thread in
            var bad = 0
            // Different orders, so threads fill and read the caches at different times.
            for i in 0..<cases.count {
                let c = cases[(i * (2 * thread + 1) + thread * 97) % cases.count]
                if tokenizer.encode(c.text) != c.ids { bad += 1 }
            }
            lock.lock()
            mismatches += bad
            lock.unlock()
        }
        XCTAssertEqual(mismatches, 0)
    }

    func testLongWordsAndLongInputs() throws {
        let tokenizer = try HFTokenizer(contentsOf: Self.fixtures.appendingPathComponent("tokenizer.json"))
        // One pre-token of 200k bytes: the merge loop must not be quadratic.
        let word = String(repeating: "abcdefghij", count: 20_000)
        XCTAssertEqual(tokenizer.decode(tokenizer.encode(word)), word)
        let chinese = String(repeating: "请分析下面这句话的意图", count: 5_000)
        XCTAssertEqual(tokenizer.decode(tokenizer.encode(chinese)), chinese)
        // Same ids whether cached or not.
        XCTAssertEqual(tokenizer.encode(word), tokenizer.encode(word))
    }

    // MARK: errors

    func writeTemporary(_ contents: String) throws -> URL {
        let url = FileManager.default.temporaryDirectory
            .appendingPathComponent("esft-tokenizer-\(UUID().uuidString).json")
        try contents.write(to: url, atomically: true, encoding: .utf8)
        addTeardownBlock { try? FileManager.default.removeItem(at: url) }
        return url
    }

    func assertLoadError(_ contents: String, mentions words: [String], file: StaticString = #filePath, line: UInt = #line) throws {
        let url = try writeTemporary(contents)
        XCTAssertThrowsError(try HFTokenizer(contentsOf: url), file: file, line: line) { error in
            let message = "\(error)"
            XCTAssertTrue(error is TokenizerError, file: file, line: line)
            XCTAssertTrue(message.contains(url.path), "error does not name the file: \(message)", file: file, line: line)
            for word in words {
                XCTAssertTrue(message.contains(word), "error does not mention \(word): \(message)", file: file, line: line)
            }
        }
    }

    static let byteLevel = #"{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}"#

    static func tokenizerJSON(model: String, normalizer: String = "null", pre: String = byteLevel) -> String {
        #"{"version": "1.0", "truncation": null, "padding": null, "added_tokens": [], "normalizer": \#(normalizer),"#
            + #" "pre_tokenizer": \#(pre), "post_processor": null, "decoder": \#(byteLevel), "model": \#(model)}"#
    }

    static let bpeModel = #"{"type": "BPE", "dropout": null, "unk_token": null, "byte_fallback": false, "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": [["a", "b"]]}"#

    func testMinimalTokenizerLoads() throws {
        let tokenizer = try HFTokenizer(contentsOf: try writeTemporary(Self.tokenizerJSON(model: Self.bpeModel)))
        XCTAssertEqual(tokenizer.encode("abab"), [2, 2])
        XCTAssertEqual(tokenizer.encode("ba"), [1, 0])
    }

    func testErrorForFileThatDoesNotParse() throws {
        try assertLoadError(#"{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [}"#, mentions: ["JSON"])
        try assertLoadError("[1, 2, 3]", mentions: ["object"])
        try assertLoadError(Self.tokenizerJSON(model: #"{"type": "BPE", "vocab": [], "merges": []}"#), mentions: ["model.vocab"])
        XCTAssertThrowsError(try HFTokenizer(contentsOf: URL(fileURLWithPath: "/nonexistent/tokenizer.json"))) {
            XCTAssertTrue("\($0)".contains("/nonexistent/tokenizer.json"))
        }
    }

    func testErrorForUnsupportedModelTypes() throws {
        try assertLoadError(Self.tokenizerJSON(model: #"{"type": "WordPiece", "unk_token": "[UNK]", "vocab": {"a": 0}}"#),
                            mentions: ["WordPiece", "unsupported"])
        try assertLoadError(Self.tokenizerJSON(model: #"{"type": "Unigram", "vocab": [["a", 0.0]]}"#), mentions: ["Unigram"])
        try assertLoadError(Self.tokenizerJSON(model: Self.bpeModel.replacingOccurrences(of: #""byte_fallback": false"#, with: #""byte_fallback": true"#)),
                            mentions: ["byte_fallback"])
    }

    func testErrorForUnsupportedPipelineSteps() throws {
        try assertLoadError(Self.tokenizerJSON(model: Self.bpeModel, normalizer: #"{"type": "Lowercase"}"#), mentions: ["Lowercase"])
        try assertLoadError(Self.tokenizerJSON(model: Self.bpeModel, pre: #"{"type": "Metaspace", "replacement": "▁"}"#), mentions: ["Metaspace"])
        try assertLoadError(Self.tokenizerJSON(model: Self.bpeModel, pre: #"{"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": "\\d"}, "behavior": "Isolated", "invert": false}]}"#),
                            mentions: ["ByteLevel"])
        try assertLoadError(Self.tokenizerJSON(model: Self.bpeModel, pre: #"{"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": "(?m:a.b)"}, "behavior": "Isolated", "invert": false}, \#(Self.byteLevel)]}"#),
                            mentions: ["(?m:a.b)"])
        try assertLoadError(Self.tokenizerJSON(model: Self.bpeModel, pre: #"{"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": "[a-"}, "behavior": "Isolated", "invert": false}, \#(Self.byteLevel)]}"#),
                            mentions: ["[a-"])
    }
}

import ESFTData
import ESFTTestSupport
import Foundation
import XCTest

/// The ESFT reference's training data (../shared/esft-reference, not in the repository) through
/// `esft data prepare`, with the byte tokenizer and the fixture tokenizer.json.
final class ReferenceDatasetTests: XCTestCase {
    static let reference = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("../shared/esft-reference/datasets/train").standardizedFileURL

    func referenceFile(_ name: String) throws -> URL {
        let url = Self.reference.appendingPathComponent(name)
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw XCTSkip("reference dataset \(url.path) is absent (see /work/shared/esft-reference/README.md)")
        }
        return url
    }

    /// The records of a JSONL file: (user, assistant) pairs.
    func pairs(_ url: URL) throws -> [(String, String)] {
        try Data(contentsOf: url).split(separator: UInt8(ascii: "\n")).map { line in
            let o = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(line)) as? [String: Any])
            let m = try XCTUnwrap(o["messages"] as? [[String: Any]])
            return (try XCTUnwrap(m[0]["content"] as? String), try XCTUnwrap(m[1]["content"] as? String))
        }
    }

    func check(_ task: String, tokenizer: String, decode: ([Int32]) -> String, eos: String) throws {
        let input = try referenceFile("\(task).jsonl")
        let dir = try Fixtures.tempDirectory("esft-ref-data")
        defer { try? FileManager.default.removeItem(at: dir) }
        let out = dir.appendingPathComponent("d.h5").path
        let r = try Executables.esft(["data", "prepare", "--tokenizer", tokenizer, "--input", input.path, "--seq-len", "1024", "--out", out])
        XCTAssertEqual(r.status, 0, r.stderr)
        let expected = try pairs(input)
        XCTAssertTrue(r.stdout.contains("samples: \(expected.count)"), r.stdout)
        for key in ["tokens: ", "rows: ", "trained tokens: ", "truncated samples: ", "skipped bad lines: 0"] {
            XCTAssertTrue(r.stdout.contains(key), "summary lacks \(key): \(r.stdout)")
        }
        let d = try TokenDataset(path: out)
        XCTAssertEqual(d.samples.count, expected.count)
        // Every sample of the first rows: masked span = prompt, trained span = answer + EOS.
        let allIds = try d.allInputIds(), allLabels = try d.allLabels()
        for (k, s) in d.samples.enumerated().prefix(60) where s.length < d.seqLen {
            let base = s.row * d.seqLen + s.start
            let ids = Array(allIds[base..<(base + s.length)]), labels = Array(allLabels[base..<(base + s.length)])
            XCTAssertEqual(ids.first, d.metadata.bosId)
            XCTAssertEqual(ids.last, d.metadata.eosId)
            let split = try XCTUnwrap(labels.firstIndex { $0 != -100 })
            XCTAssertTrue(labels[split...].allSatisfy { $0 != -100 })
            XCTAssertEqual(Array(labels[split...]), Array(ids[split...]))
            XCTAssertEqual(decode(Array(ids[1..<split])), "User: \(expected[k].0)\n\nAssistant:", "sample \(k)")
            XCTAssertEqual(decode(Array(ids[split...])), " \(expected[k].1)" + eos, "sample \(k)")
        }
    }

    func testIntentAndLawWithByteTokenizer() throws {
        for task in ["intent", "law"] { try check(task, tokenizer: "bytes", decode: ByteTokenizer().decode, eos: "") }
    }

    func testIntentAndLawWithFixtureTokenizer() throws {
        let url = Fixtures.root.appendingPathComponent("tokenizer/tokenizer.json")
        let t = try HFTokenizer(contentsOf: url)
        for task in ["intent", "law"] {
            try check(task, tokenizer: url.path, decode: { t.decode($0) }, eos: "<｜end▁of▁sentence｜>")
        }
    }
}

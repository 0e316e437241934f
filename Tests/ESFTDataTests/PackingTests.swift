import ESFTData
import ESFTKernels
import XCTest

/// Chat layout and greedy packing with the byte tokenizer: ids are bytes, so every expectation is
/// spelled out by hand.
final class PackingTests: XCTestCase {
    let bytes = try! LoadedTokenizer.load("bytes")
    let B: Int32 = 256, E: Int32 = 257, P: Int32 = 258, M: Int32 = -100

    func ids(_ s: String) -> [Int32] { s.utf8.map { Int32($0) } }
    func masked(_ s: String) -> [Int32] { [Int32](repeating: -100, count: s.utf8.count) }

    func chat(_ turns: [(String, String)]) -> [String: Any] {
        ["messages": turns.map { ["role": $0.0, "content": $0.1] }]
    }

    func testSingleTurnLayout() throws {
        let parts = try ChatFormat.parts(of: chat([("user", "Hi"), ("assistant", "Yo")]))
        let (i, l) = ChatFormat.tokenize(parts, with: bytes)
        XCTAssertEqual(i, [B] + ids("User: Hi\n\nAssistant:") + ids(" Yo") + [E])
        XCTAssertEqual(l, [M] + masked("User: Hi\n\nAssistant:") + ids(" Yo") + [E])
    }

    func testMultiTurnAndSystemLayout() throws {
        let parts = try ChatFormat.parts(of: chat([("system", "S"), ("user", "a"), ("assistant", "b"), ("user", "c"), ("assistant", "d")]))
        let (i, l) = ChatFormat.tokenize(parts, with: bytes)
        XCTAssertEqual(i, [B] + ids("S\n\n") + ids("User: a\n\nAssistant:") + ids(" b") + [E] + ids("User: c\n\nAssistant:") + ids(" d") + [E])
        XCTAssertEqual(l, [M] + masked("S\n\n") + masked("User: a\n\nAssistant:") + ids(" b") + [E] + masked("User: c\n\nAssistant:") + ids(" d") + [E])
    }

    func testTextSampleIsAllTrained() throws {
        let (i, l) = ChatFormat.tokenize(try ChatFormat.parts(of: ["text": "xy"]), with: bytes)
        XCTAssertEqual(i, [B, 120, 121, E])
        XCTAssertEqual(l, i)
    }

    func testFieldErrors() {
        let cases: [(Any, String)] = [
            (["messages": "x"], "\"messages\" is not a list"),
            (["messages": [["content": "q"]]], "messages[0].role is missing"),
            (["messages": [["role": "user", "content": 3]]], "messages[0].content is not a string"),
            (["messages": [["role": "user", "content": "q"]]], "no assistant turn"),
            (["messages": [["role": "assistant", "content": "a"]]], "must follow a user turn"),
            (["messages": [["role": "bot", "content": "a"]]], "role \"bot\""),
            (["text": 1], "\"text\" is not a string"),
            (["other": 1], "neither"),
            ([1, 2], "not a JSON object"),
        ]
        for (json, expected) in cases {
            XCTAssertThrowsError(try ChatFormat.parts(of: json)) { XCTAssertTrue("\($0)".contains(expected), "\($0) should mention \(expected)") }
        }
    }

    func testGreedyPackingRowsAndPadding() {
        var p = Packer(seqLen: 8, padId: P, bosId: B)
        p.add(ids: [B, 1, 2], labels: [M, 1, 2], source: 0)   // row 0 [0,3)
        p.add(ids: [B, 3, 4, 5], labels: [M, 3, 4, 5], source: 0)  // row 0 [3,7)
        p.add(ids: [B, 6], labels: [B, 6], source: 1)   // 2 > 1 free: row 0 padded, row 1 [0,2)
        p.add(ids: [B, 7, 8, 9, 10, 11], labels: [M, 7, 8, 9, 10, 11], source: 0)  // exactly fills row 1
        p.add(ids: [B, 12], labels: [M, 12], source: 0)  // row 2
        let out = p.finish()
        XCTAssertEqual(out.rows, 3)
        XCTAssertEqual(out.inputIds, [B, 1, 2, B, 3, 4, 5, P,  B, 6, B, 7, 8, 9, 10, 11,  B, 12, P, P, P, P, P, P])
        XCTAssertEqual(out.labels, [M, 1, 2, M, 3, 4, 5, M,  B, 6, M, 7, 8, 9, 10, 11,  M, 12, M, M, M, M, M, M])
        XCTAssertEqual(out.samples, [.init(row: 0, start: 0, length: 3, source: 0), .init(row: 0, start: 3, length: 4, source: 0),
                                     .init(row: 1, start: 0, length: 2, source: 1), .init(row: 1, start: 2, length: 6, source: 0),
                                     .init(row: 2, start: 0, length: 2, source: 0)])
    }

    func testLongSampleKeepsItsTail() {
        var p = Packer(seqLen: 4, padId: P, bosId: B)
        p.add(ids: [B, 1], labels: [M, 1], source: 0)
        p.add(ids: [B, 1, 2, 3, 4, E], labels: [M, M, M, 3, 4, E], source: 0)
        let out = p.finish()
        XCTAssertEqual(p.truncated, 1)
        XCTAssertEqual(out.inputIds, [B, 1, P, P, 2, 3, 4, E])
        XCTAssertEqual(out.labels, [M, 1, M, M, M, 3, 4, E])
        XCTAssertEqual(out.samples.last, .init(row: 1, start: 0, length: 4, source: 0))
    }

    func pack(dropBOS: Double, seed: UInt64) -> Packer {
        var p = Packer(seqLen: 64, padId: P, bosId: B, dropBOS: dropBOS, seed: seed)
        for k in 0..<200 { p.add(ids: [B] + [Int32](repeating: Int32(k % 200), count: 1 + k % 7), labels: [M] + [Int32](repeating: 1, count: 1 + k % 7), source: 0) }
        p.closeRow()
        return p
    }

    func testDropBOSIsSeededAndOnlyInsideRows() {
        let a = pack(dropBOS: 0.5, seed: 7), b = pack(dropBOS: 0.5, seed: 7), c = pack(dropBOS: 0.5, seed: 8)
        XCTAssertEqual(a.inputIds, b.inputIds)
        XCTAssertNotEqual(a.inputIds, c.inputIds)
        XCTAssertGreaterThan(a.droppedBOS, 0)
        for s in a.samples where s.start == 0 { XCTAssertEqual(a.inputIds[s.row * 64], B, "the first sample of a row keeps BOS") }
        XCTAssertEqual(a.samples.filter { $0.start > 0 && a.inputIds[$0.row * 64 + $0.start] != B }.count, a.droppedBOS)
        XCTAssertEqual(pack(dropBOS: 0, seed: 7).droppedBOS, 0)
    }

    func writeJSONL(_ lines: [String], _ dir: URL, _ name: String) throws -> String {
        let url = dir.appendingPathComponent(name)
        try (lines.joined(separator: "\n") + "\n").write(to: url, atomically: true, encoding: .utf8)
        return url.path
    }

    func prepare(_ dir: URL, inputs: [String], seqLen: Int, seed: UInt64 = 0, fraction: Double? = nil, mix: (Int, Int) = (1, 1),
                 name: String = "out.h5") throws -> (TokenDataset, DatasetPreparation.Summary) {
        var o = DatasetPreparation.Options(inputs: inputs, seqLen: seqLen, output: dir.appendingPathComponent(name))
        o.seed = seed; o.validationFraction = fraction; o.mix = mix
        let summary = try DatasetPreparation.run(o, tokenizer: bytes)
        return (try TokenDataset(path: o.output.path), summary)
    }

    func testSplitIsSeededAndKeepsATrainRow() throws {
        let dir = try tempDir()
        let input = try writeJSONL((0..<40).map { "{\"text\": \"sample \($0)\"}" }, dir, "t.jsonl")
        let (a, sa) = try prepare(dir, inputs: [input], seqLen: 12, seed: 1, name: "a.h5")
        let (b, _) = try prepare(dir, inputs: [input], seqLen: 12, seed: 1, name: "b.h5")
        let (c, _) = try prepare(dir, inputs: [input], seqLen: 12, seed: 2, name: "c.h5")
        XCTAssertEqual(a.rows, 40)
        XCTAssertEqual(a.validationRows.count, 2, "default 0.05 of 40 rows")
        XCTAssertEqual(sa.validationRows, 2)
        XCTAssertEqual(a.split, b.split)
        XCTAssertEqual(a.digest, b.digest)
        XCTAssertNotEqual(a.split, c.split)
        let (d, _) = try prepare(dir, inputs: [input], seqLen: 12, fraction: 0.99, name: "d.h5")
        XCTAssertEqual(d.trainRows.count, 1, "at least one train row")
        let small = try writeJSONL(["{\"text\": \"x\"}"], dir, "s.jsonl")
        XCTAssertEqual(try prepare(dir, inputs: [small], seqLen: 4, name: "e.h5").0.validationRows, [], "no default split under 20 rows")
    }

    func testMixingRatioAndSources() throws {
        let dir = try tempDir()
        let task = try writeJSONL((0..<30).map { "{\"text\": \"t\($0)\"}" }, dir, "task.jsonl")
        let general = try writeJSONL((0..<100).map { "{\"text\": \"g\($0)\"}" }, dir, "general.jsonl")
        let (d, s) = try prepare(dir, inputs: [task, general], seqLen: 8, mix: (1, 2))
        XCTAssertEqual(s.samples, [30, 60])
        XCTAssertEqual(d.samples.filter { $0.source == 0 }.count, 30)
        XCTAssertEqual(d.samples.filter { $0.source == 1 }.count, 60)
        // Sources interleave, each in file order.
        let allIds = try d.allInputIds()
        let texts = d.samples.map { ByteTokenizer().decode(Array(allIds[($0.row * 8 + $0.start)..<($0.row * 8 + $0.start + $0.length)])) }
        XCTAssertEqual(texts.filter { $0.hasPrefix("t") }, (0..<30).map { "t\($0)" })
        let g = texts.filter { $0.hasPrefix("g") }.map { Int($0.dropFirst())! }
        XCTAssertEqual(g, g.sorted())
        XCTAssertNotEqual(d.samples.prefix(30).map(\.source), [Int](repeating: 0, count: 30))
        let (again, _) = try prepare(dir, inputs: [task, general], seqLen: 8, mix: (1, 2), name: "again.h5")
        XCTAssertEqual(again.digest, d.digest)
        XCTAssertTrue(d.metadata.sourcesJSON.contains("\"mix\":\"1:2\""), d.metadata.sourcesJSON)
        XCTAssertTrue(d.metadata.sourcesJSON.contains("general.jsonl"))
    }

    func tempDir() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("esft-data-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: url) }
        return url
    }
}

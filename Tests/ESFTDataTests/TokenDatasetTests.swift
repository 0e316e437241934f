import ESFTData
import ESFTHDF5
import ESFTKernels
import XCTest

final class TokenDatasetTests: XCTestCase {
    let metadata = TokenDataset.Metadata(seqLen: 4, vocabSize: 259, padId: 258, bosId: 256, eosId: 257, tokenizer: "bytes",
                                         tokenizerFingerprint: "bytes-v1", sourcesJSON: "{\"inputs\":[]}", seed: 42)
    let ids: [Int32] = [256, 65, 66, 257, 256, 67, 258, 258]
    let labels: [Int32] = [-100, 65, 66, 257, -100, 67, -100, -100]
    let samples = [TokenDataset.Sample(row: 0, start: 0, length: 4, source: 0), TokenDataset.Sample(row: 1, start: 0, length: 2, source: 1)]

    func write(_ m: TokenDataset.Metadata? = nil) throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("esft-tokens-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("d.h5")
        try TokenDataset.write(to: url, metadata: m ?? metadata, inputIds: ids, labels: labels, split: [0, 1], samples: samples)
        return url
    }

    func testRoundTrip() throws {
        let url = try write()
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: url.deletingLastPathComponent().path), ["d.h5"], "no temporary left")
        let d = try TokenDataset(path: url.path)
        XCTAssertEqual(d.rows, 2)
        XCTAssertEqual((try d.allInputIds()), ids)
        XCTAssertEqual((try d.allLabels()), labels)
        XCTAssertEqual(d.split, [0, 1])
        XCTAssertEqual(d.trainRows, [0]); XCTAssertEqual(d.validationRows, [1])
        XCTAssertEqual(d.samples, samples)
        XCTAssertEqual(d.metadata.tokenizer, "bytes"); XCTAssertEqual(d.metadata.seed, 42); XCTAssertEqual(d.metadata.bosId, 256)
        XCTAssertTrue(d.digest.hasPrefix("fnv1a64:"))
        XCTAssertEqual(d.digest, try TokenDataset(path: url.path).digest)
    }

    func assertError(_ url: URL, contains text: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try TokenDataset(path: url.path), file: file, line: line) {
            XCTAssertTrue("\($0)".contains(text) && "\($0)".contains(url.path), "\($0)", file: file, line: line)
        }
    }

    func testWrongFormatAttribute() throws {
        let url = try write()
        let f = try H5File.openReadWrite(url.path)
        try f.attributes.set("esft_format", "something-else")
        try f.close()
        assertError(url, contains: "not an esft token dataset")
    }

    func testNewerVersion() throws {
        let url = try write()
        let f = try H5File.openReadWrite(url.path)
        try f.attributes.set("esft_format_version", TokenDataset.version + 1)
        try f.close()
        assertError(url, contains: "newer")
    }

    func testOutOfVocabularyId() throws {
        var m = metadata
        m.vocabSize = 100  // 256.. are beyond it
        assertError(try write(m), contains: "input_ids[0][0]: is 256, outside the vocabulary 0..<100 (vocab_size)")
    }
}

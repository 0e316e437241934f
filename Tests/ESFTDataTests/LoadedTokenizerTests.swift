import ESFTData
import ESFTTestSupport
import XCTest

/// Finding BOS/EOS/PAD in a tokenizer.json, overrides, and the errors when they cannot be found.
final class LoadedTokenizerTests: XCTestCase {
    let tokenizers = Fixtures.root.appendingPathComponent("tokenizer")

    func testDeepSeekSpecialTokensAreFound() throws {
        let t = try LoadedTokenizer.load(tokenizers.path)  // a directory holding tokenizer.json
        XCTAssertEqual(t.bosId, 0); XCTAssertEqual(t.eosId, 1); XCTAssertEqual(t.padId, 1, "PAD falls back to EOS")
        XCTAssertEqual(t.kind, "hf:tokenizer.json")
        XCTAssertTrue(t.fingerprint.hasPrefix("fnv1a64:"))
        XCTAssertEqual(try LoadedTokenizer.load("bytes").fingerprint, "bytes-v1")
    }

    func testMissingSpecialTokensAreAnErrorUnlessNamed() throws {
        let file = tokenizers.appendingPathComponent("variants/split_behaviors.json").path
        XCTAssertThrowsError(try LoadedTokenizer.load(file)) {
            XCTAssertTrue("\($0)".contains("no BOS token found") && "\($0)".contains("split_behaviors.json"), "\($0)")
        }
        let t = try LoadedTokenizer.load(file, bos: "5", eos: "6", pad: "7")
        XCTAssertEqual([t.bosId, t.eosId, t.padId], [5, 6, 7])
        XCTAssertThrowsError(try LoadedTokenizer.load(file, bos: "<nope>", eos: "6")) { XCTAssertTrue("\($0)".contains("--bos-token '<nope>'"), "\($0)") }
        XCTAssertThrowsError(try LoadedTokenizer.load("/no/such/tokenizer.json")) { XCTAssertTrue("\($0)".contains("/no/such/tokenizer.json"), "\($0)") }
    }
}

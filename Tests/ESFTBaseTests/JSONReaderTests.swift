import ESFTBase
import Foundation
import XCTest

final class JSONReaderTests: XCTestCase {
    private func reader(_ text: String) throws -> JSONReader {
        try JSONReader.parse(Data(text.utf8), source: "f.json", what: "test file")
    }

    private func message(_ body: () throws -> Void) -> String {
        do { try body() } catch { return "\(error)" }
        XCTFail("expected an error")
        return ""
    }

    func testTypedReads() throws {
        let r = try reader(#"{"n": 3, "x": 0.25, "big": 1e3, "s": "hi", "b": true, "list": [1, 2], "o": {"k": null}}"#)
        XCTAssertEqual(try r.field("n").int(), 3)
        XCTAssertEqual(try r.field("x").double(), 0.25)
        XCTAssertEqual(try r.field("big").int(), 1000, "an integral number is an integer")
        XCTAssertEqual(try r.field("n").double(), 3)
        XCTAssertEqual(try r.field("s").string(), "hi")
        XCTAssertEqual(try r.field("b").bool(), true)
        XCTAssertEqual(try r.field("list").items().map { try $0.int() }, [1, 2])
        XCTAssertNil(try r.field("o").optionalField("k"), "null reads as absent")
        XCTAssertNil(try r.optionalField("absent"))
        XCTAssertEqual(Set(try r.keys()), ["n", "x", "big", "s", "b", "list", "o"])
    }

    func testErrorsNameTheFileAndTheFieldPath() throws {
        let r = try reader(#"{"a": {"b": [1, "two"]}, "s": "text", "f": 1.5}"#)
        XCTAssertEqual(message { _ = try r.field("a").field("b").items()[1].int() },
                       #"f.json: field 'a.b[1]' must be an integer, got "two""#)
        XCTAssertEqual(message { _ = try r.field("a").field("c") }, "f.json: field 'a.c' is missing")
        XCTAssertEqual(message { _ = try r.field("missing") }, "f.json: field 'missing' is missing")
        XCTAssertEqual(message { _ = try r.field("s").bool() }, #"f.json: field 's' must be true or false, got "text""#)
        XCTAssertEqual(message { _ = try r.field("f").int() }, "f.json: field 'f' must be an integer, got 1.5")
        XCTAssertEqual(message { _ = try r.field("s").object() }, #"f.json: field 's' must be an object, got "text""#)
    }

    func testSyntaxErrorSaysLineAndColumn() {
        let m = message { _ = try self.reader("{\n  \"a\": 1,\n  \"b\": ]\n}") }
        XCTAssert(m.hasPrefix("f.json: not valid JSON at line 3, column "), m)
    }

    func testTopLevelMustBeAnObject() {
        XCTAssertEqual(message { _ = try self.reader("[1, 2]") },
                       "f.json: expected a JSON object at the top level (a test file)")
    }

    func testLoadNamesAMissingFile() {
        let url = URL(fileURLWithPath: "/nonexistent-esft-dir/absent.json")
        let m = message { _ = try JSONReader.load(url, what: "model config") }
        XCTAssert(m.hasPrefix("/nonexistent-esft-dir/absent.json: cannot read model config ("), m)
    }

    func testDoublesReadBackExactly() throws {
        // 17-digit values JSONSerialization on Linux can read an ulp off; the reader must not.
        var g = SystemRandomNumberGenerator()
        let xs = (0..<500).map { _ in Double.random(in: -1e6...1e6, using: &g) } + [0.1 + 0.2, 1e-6, .leastNonzeroMagnitude, .greatestFiniteMagnitude]
        let text = "{\"xs\": [" + xs.map { "\($0)" }.joined(separator: ", ") + "]}"
        let read = try reader(text).field("xs").items().map { try $0.double() }
        XCTAssertEqual(read.map(\.bitPattern), xs.map(\.bitPattern))
    }

    func testFoundationTreesReadLikeParsedText() throws {
        let text = #"{"i": 42, "d": 1e-06, "t": 0.707, "b": false, "s": "x", "n": null, "l": [1, 2.5], "o": {"k": 40}}"#
        let tree = try JSONSerialization.jsonObject(with: Data(text.utf8))
        let viaFoundation = JSONReader(foundation: tree, source: "f.json")
        let parsed = try reader(text)
        for key in ["i", "d", "t"] { XCTAssertEqual(try viaFoundation.field(key).double(), try parsed.field(key).double(), key) }
        XCTAssertEqual(try viaFoundation.field("i").int(), 42)
        XCTAssertEqual(try viaFoundation.field("b").bool(), false, "a JSON boolean is not a number")
        XCTAssertThrowsError(try viaFoundation.field("i").bool(), "a number is not a boolean")
        XCTAssertEqual(try viaFoundation.field("s").string(), "x")
        XCTAssertNil(try viaFoundation.optionalField("n"))
        XCTAssertEqual(try viaFoundation.field("l").items().map { try $0.double() }, [1, 2.5])
        XCTAssertEqual(try viaFoundation.field("o").field("k").int(), 40)
        // A Swift literal reads the same way.
        let literal = JSONReader(foundation: ["i": 42, "b": true, "o": ["k": 0.5]] as [String: Any], source: "lit")
        XCTAssertEqual(try literal.field("i").int(), 42)
        XCTAssertEqual(try literal.field("b").bool(), true)
        XCTAssertEqual(try literal.field("o").field("k").double(), 0.5)
        XCTAssertEqual(message { _ = try literal.field("b").int() }, "lit: field 'b' must be an integer, got true")
    }

    func testTextWriterEscapesAndReadsBack() throws {
        let s = "quote \" backslash \\ newline \n tab \t bell \u{7}"
        let out = "{\"s\": \(JSONText.string(s)), \"m\": \(JSONText.expertMap([0.5, 2]))}"
        let r = try reader(out)
        XCTAssertEqual(try r.field("s").string(), s)
        XCTAssertEqual(try r.field("m").field("1").double(), 2)
    }
}

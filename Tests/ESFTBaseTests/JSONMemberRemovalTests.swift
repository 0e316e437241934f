import ESFTBase
import Foundation
import XCTest

/// `JSONText.removingMember`: one top-level member out, every other byte as it was (import drops an FP8
/// checkpoint's quantization_config this way; re-serialising would turn 1.0 into 1, which transformers refuses).
final class JSONMemberRemovalTests: XCTestCase {
    private func removed(_ text: String, _ key: String = "q") -> String {
        String(decoding: JSONText.removingMember(key, from: Data(text.utf8)), as: UTF8.self)
    }

    func testMembersAnywhereAndNothingElseTouched() throws {
        XCTAssertEqual(removed(#"{"a": 1.0, "q": {"x": [1, {"y": "}"}]}, "b": 2.50}"#), #"{"a": 1.0, "b": 2.50}"#)
        XCTAssertEqual(removed("{\n  \"a\": 1.0,\n  \"q\": {\"m\": \"fp8\"}\n}\n"), "{\n  \"a\": 1.0\n}\n")
        XCTAssertEqual(removed(#"{"q": "a\"b", "a": 1e-06}"#), #"{"a": 1e-06}"#)
        XCTAssertEqual(removed(#"{"q": null}"#), #"{}"#)
        // Absent at the top level (a nested "q" and a string value "q" are not members of the top object).
        let nested = #"{"a": {"q": 1}, "b": "q", "c": ["q"]}"#
        XCTAssertEqual(removed(nested), nested)
        // The result is still valid JSON and keeps the other values.
        let real = try String(contentsOf: URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/v3fp8/v3fp8_e4m3_block128_qproj_bias/config.json"), encoding: .utf8)
        let out = removed(real, "quantization_config")
        XCTAssertFalse(out.contains("quantization_config"))
        XCTAssert(out.contains(#""routed_scaling_factor": 1.0"#))
        let parsed = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Any])
        let original = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(real.utf8)) as? [String: Any])
        XCTAssertEqual(Set(parsed.keys), Set(original.keys).subtracting(["quantization_config"]))
    }
}

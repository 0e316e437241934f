import ESFTBase
import XCTest

final class FNV1aTests: XCTestCase {
    func testKnownDigests() {
        // The published FNV-1a 64 test vectors for "", "a" and "foobar".
        XCTAssertEqual(FNV1a64().value, 0xCBF2_9CE4_8422_2325)
        XCTAssertEqual(FNV1a64.digest(Array("a".utf8)), "fnv1a64:af63dc4c8601ec8c")
        var d = FNV1a64()
        d.add("foobar")
        XCTAssertEqual(d.hexDigest, "fnv1a64:85944171f73967e8")
    }
}

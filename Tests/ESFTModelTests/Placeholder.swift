import XCTest
final class ESFTModelTestsPlaceholder: XCTestCase { func testNothing() {} }

import XCTest
final class ESFTCLITestsPlaceholder: XCTestCase { func testNothing() {} }

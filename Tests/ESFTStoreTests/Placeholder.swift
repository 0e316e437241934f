import XCTest
final class ESFTStoreTestsPlaceholder: XCTestCase { func testNothing() {} }

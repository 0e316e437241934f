import ESFTTestSupport
import Foundation
import XCTest

/// scripts/test_summary.sh, the closing line CI reads: counted over every suite, and a test process that
/// died is a failure naming the running test, never a pass.
final class TestSummaryTests: XCTestCase {
    static let script = Fixtures.root.deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("scripts/test_summary.sh")

    func summary(_ log: String, status: Int32) throws -> Executables.Result {
        let dir = try Fixtures.tempDirectory("summary")
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("log")
        try Data(log.utf8).write(to: file)
        return try Executables.run(URL(fileURLWithPath: "/bin/bash"), [Self.script.path, file.path, "\(status)"])
    }

    func testCountsEverySuite() throws {
        let log = """
        Test Suite 'A' started at 2026-12-07 10:00:00.000
        Test Case 'A.testOne' started at 2026-12-07 10:00:00.000
        Test Case 'A.testOne' passed (0.1 seconds)
        Test Case 'A.testTwo' started at 2026-12-07 10:00:00.100
        Test Case 'A.testTwo' skipped (0.0 seconds)
        \t Executed 2 tests, with 0 failures (0 unexpected) in 0.1 (0.1) seconds
        Test Case 'B.testThree' started at 2026-12-07 10:00:00.200
        B.swift:3: error: B.testThree : XCTAssertEqual failed
        Test Case 'B.testThree' failed (0.0 seconds)
        Test Case 'B.testFour' started at 2026-12-07 10:00:00.300
        Test Case 'B.testFour' passed (0.0 seconds)
        \t Executed 2 tests, with 1 failure (0 unexpected) in 0.1 (0.1) seconds
        """
        var r = try summary(log, status: 1)
        XCTAssertEqual(r.stdout, "2 passed, 1 failed, 1 skipped\n")
        XCTAssertEqual(r.status, 1)
        r = try summary(log.replacingOccurrences(of: "failed (0.0", with: "passed (0.0"), status: 0)
        XCTAssertEqual(r.stdout, "3 passed, 0 failed, 1 skipped\n")
        XCTAssertEqual(r.status, 0)
    }

    /// What a Zen 3 printed: a fatal error inside one test ends the process; the last "Executed" line belongs
    /// to an earlier suite and must not be taken for the total.
    func testACrashedProcessIsAFailureNamingTheTest() throws {
        let log = """
        Test Case 'A.testOne' started at 2026-12-07 10:00:00.000
        Test Case 'A.testOne' passed (0.1 seconds)
        \t Executed 2 tests, with 0 failures (0 unexpected) in 0.1 (0.1) seconds
        Test Case 'GEMMBackendTests.testBF16Products' started at 2026-12-07 10:00:00.100
        ESFTKernels/OneDNN.swift:45: Fatal error: oneDNN: no bf16 matmul for n 64 k 256 (status 3)
        """
        let r = try summary(log, status: 132)
        XCTAssertEqual(r.status, 1)
        XCTAssert(r.stdout.contains("while GEMMBackendTests.testBF16Products was running"), r.stdout)
        XCTAssert(r.stdout.hasSuffix("1 passed, 1 failed, 0 skipped\n"), r.stdout)
        // A non-zero status with no test running and none failed (a build error): still a failure.
        let build = try summary("error: compile command failed\n", status: 1)
        XCTAssertEqual(build.status, 1)
        XCTAssert(build.stdout.hasSuffix("0 passed, 1 failed, 0 skipped\n"), build.stdout)
    }
}

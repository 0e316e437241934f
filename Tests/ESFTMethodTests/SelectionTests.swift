import ESFTKernels
import ESFTMethod
import XCTest

final class SelectionTests: XCTestCase {
    func testDescendingOrderWithTiesToLowerId() {
        XCTAssertEqual(selectExperts(scores: [0.1, 0.3, 0.3, 0.2, 0.1], rule: .topK(5)), [1, 2, 3, 0, 4])
    }

    func testThresholdIncludesTheCrossingExpert() {
        // Running sums 0.4, 0.7 (still below 0.75), 0.9 crosses: three experts.
        XCTAssertEqual(selectExperts(scores: [0.1, 0.4, 0.3, 0.2], rule: .threshold(0.75)), [1, 2, 3])
        // Reaching p exactly stops: 0.4 + 0.3 = 0.7 is not below 0.7.
        XCTAssertEqual(selectExperts(scores: [0.1, 0.4, 0.3, 0.2], rule: .threshold(0.7)), [1, 2])
    }

    func testAtLeastOneExpert() {
        XCTAssertEqual(selectExperts(scores: [0.2, 0.5, 0.3], rule: .threshold(0.01)), [1])
        XCTAssertEqual(selectExperts(scores: [0, 0, 0], rule: .threshold(0.5)), [0, 1, 2], "sums below p take every expert")
    }

    func testTopK() {
        XCTAssertEqual(selectExperts(scores: [0.1, 0.4, 0.3, 0.2], rule: .topK(2)), [1, 2])
        XCTAssertEqual(selectExperts(scores: [0.1, 0.4, 0.3, 0.2], rule: .topK(1)), [1])
    }

    func testRoundingLikePython() {
        XCTAssertEqual(roundedScore(0.12345, decimals: 4), 0.1235)  // 0.12345 is stored just above the tie
        XCTAssertEqual(roundedScore(0.00005, decimals: 4), 0.0001)
        XCTAssertEqual(roundedScore(0.125, decimals: 2), 0.12, "exact ties go to even, like Python's round")
        XCTAssertEqual(roundedScore(0.04238, decimals: 4), 0.0424)
    }

    func testRoundingChangesTheSelection() throws {
        // Unrounded, 0.5 + 0.37496 stays below p = 0.875, so a third expert is needed; rounded to 4
        // decimals the second score is 0.375 and the sum reaches p exactly (all values exact in binary).
        let scores = MethodTestSupport.scores(token: [1: [0.37496, 0.25, 0.5, 0.0]])
        let exact = try selectExperts(from: scores, options: SelectionOptions(method: .token, rule: .threshold(0.875)))
        XCTAssertEqual(exact[0].experts, [2, 0, 1])
        let rounded = try selectExperts(from: scores, options: SelectionOptions(method: .token, rule: .threshold(0.875), roundDecimals: 4))
        XCTAssertEqual(rounded[0].experts, [2, 0])
        XCTAssertEqual(rounded[0].cumulativeScore, 0.875)
    }

    func testMethodPicksTheScore() throws {
        var scores = MethodTestSupport.scores(token: [1: [0.1, 0.6, 0.3]])
        scores.gate[1] = [0.5, 0.1, 0.2]
        XCTAssertEqual(try selectExperts(from: scores, options: SelectionOptions(method: .token, rule: .topK(1)))[0].experts, [1])
        XCTAssertEqual(try selectExperts(from: scores, options: SelectionOptions(method: .gate, rule: .topK(1)))[0].experts, [0])
    }

    func testValidation() {
        let scores = MethodTestSupport.scores(token: [1: [0.5, 0.5]])
        for p in [0, -0.1, 1.5, Double.nan] {
            XCTAssertESFTError(try selectExperts(from: scores, options: SelectionOptions(method: .token, rule: .threshold(p))),
                               "threshold p must be in (0, 1]")
        }
        XCTAssertNoThrow(try selectExperts(from: scores, options: SelectionOptions(method: .token, rule: .threshold(1))))
        XCTAssertESFTError(try selectExperts(from: scores, options: SelectionOptions(method: .token, rule: .topK(3))),
                           "top-k must be in 1...2", "got 3")
        XCTAssertESFTError(try selectExperts(from: scores, options: SelectionOptions(method: .token, rule: .topK(0))),
                           "top-k must be in 1...2")
        XCTAssertESFTError(try ScoreMethod(parsing: "gates", source: "select: --method"), "unknown method 'gates'", "gate or token")
    }
}

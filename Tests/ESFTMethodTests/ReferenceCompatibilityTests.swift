import ESFTKernels
import ESFTMethod
import Foundation
import XCTest

/// Reproduces the reference repository's shipped results (deepseek-ai/ESFT results/, read from
/// ../shared/esft-reference/routing/{intent,law}) from its routing logs.
final class ReferenceCompatibilityTests: XCTestCase {
    /// Parsed logs, shared by the tests of a run (25 MB of text per task).
    nonisolated(unsafe) static var cache: [String: RoutingStatistics] = [:]

    func statistics(_ task: String) throws -> (URL, RoutingStatistics) {
        let dir = try MethodTestSupport.referenceRouting(task)
        if let s = Self.cache[task] { return (dir, s) }
        let s = try ReferenceRoutingLogs(directory: dir, topK: 6, experts: 64).statistics()
        Self.cache[task] = s
        return (dir, s)
    }

    /// summary.json: {"token_scores": {layer: {expert: score}}, "gate_scores": {...}}, 4 decimals.
    func referenceSummary(_ dir: URL) throws -> [String: [String: [String: Double]]] {
        try JSONSerialization.jsonObject(with: Data(contentsOf: dir.appendingPathComponent("summary.json")))
            as! [String: [String: [String: Double]]]
    }

    func checkSummary(_ task: String) throws {
        let (dir, stats) = try statistics(task)
        let ours = try RelevanceScores(statistics: stats, normalize: .tokens, source: task)
        let theirs = try referenceSummary(dir)
        var compared = 0, exactAfterRounding = 0
        for (name, method) in [("token_scores", ScoreMethod.token), ("gate_scores", .gate)] {
            let table = try XCTUnwrap(theirs[name])
            XCTAssertEqual(Set(table.keys), Set((1...26).map(String.init)), "\(task) \(name) layers")
            for layer in 1...26 {
                let row = try XCTUnwrap(table["\(layer)"]), scores = try XCTUnwrap(ours.scores(method, layer: layer))
                XCTAssertEqual(row.count, 64)
                for e in 0..<64 {
                    let reference = try XCTUnwrap(row["\(e)"]), value = scores[e]
                    let rounded = roundedScore(value, decimals: 4)
                    if abs(rounded - reference) < 1e-9 { exactAfterRounding += 1 }
                    XCTAssertTrue(abs(rounded - reference) < 1e-9 || abs(value - reference) < 5e-5,
                                  "\(task) \(name) layer \(layer) expert \(e): ours \(value) (rounded \(rounded)), reference \(reference)")
                    compared += 1
                }
            }
        }
        XCTAssertEqual(compared, 2 * 26 * 64)
        XCTAssertEqual(exactAfterRounding, compared, "\(task): every score rounds to the reference's 4 decimals")
    }

    func checkExpertConfig(_ task: String, unroundedDiffersIn layer: Int) throws {
        let (dir, stats) = try statistics(task)
        let scores = try RelevanceScores(statistics: stats, normalize: .tokens, source: task)
        // Through the file format, as esft select reads it.
        let reread = try RelevanceScores(jsonData: scores.jsonData(), source: "\(task) scores.json")
        XCTAssertTrue(reread == scores, "\(task): scores read back bit for bit")
        let reference = try ExpertConfig.load(contentsOf: dir.appendingPathComponent("expert_config.json"))

        let options = SelectionOptions(method: .token, rule: .threshold(0.2), roundDecimals: 4)
        let ours = ExpertConfig(try selectExperts(from: reread, options: options))
        XCTAssertEqual(ours, reference, "\(task): expert_config.json reproduced exactly, lists in the same order")
        for l in 1...26 { XCTAssertEqual(ours.experts[l], reference.experts[l], "\(task) layer \(l)") }

        // The README's note: from unrounded scores exactly one layer changes.
        var unrounded = options
        unrounded.roundDecimals = nil
        let fromExact = ExpertConfig(try selectExperts(from: reread, options: unrounded))
        XCTAssertEqual((1...26).filter { fromExact.experts[$0] != reference.experts[$0] }, [layer])
    }

    func testIntentSummaryReproduced() throws { try checkSummary("intent") }
    func testLawSummaryReproduced() throws { try checkSummary("law") }
    func testIntentExpertConfigReproduced() throws { try checkExpertConfig("intent", unroundedDiffersIn: 17) }
    func testLawExpertConfigReproduced() throws { try checkExpertConfig("law", unroundedDiffersIn: 21) }

    func testPaperNormalisationIsDifferentButConsistent() throws {
        let (_, stats) = try statistics("law")
        let perSample = try RelevanceScores(statistics: stats, normalize: .samples, source: "law")
        XCTAssertEqual(perSample.metadata.samples, stats.sampleCount[0] == 0 ? 0 : Int(stats.sampleCount[0]))
        for layer in 1...26 {
            XCTAssertEqual(perSample.token[layer]!.reduce(0, +), 1, accuracy: 1e-12, "token ratios sum to 1 in layer \(layer)")
        }
    }
}

import ESFTKernels
import ESFTMethod
import ESFTModel
import Foundation
import XCTest

final class ReportAndFingerprintTests: XCTestCase {
    func testFingerprintIsStableAndSensitive() throws {
        let a = try MethodTestSupport.tinyModel()
        XCTAssertEqual(modelFingerprint(config: a), modelFingerprint(config: try MethodTestSupport.tinyModel()))
        XCTAssertTrue(modelFingerprint(config: a).hasPrefix("fnv1a64:"))
        XCTAssertEqual(modelFingerprint(config: a).count, "fnv1a64:".count + 16)
        XCTAssertNotEqual(modelFingerprint(config: a), modelFingerprint(config: try MethodTestSupport.tinyModel(experts: 6)))
        XCTAssertNotEqual(modelFingerprint(config: a), modelFingerprint(config: try MethodTestSupport.tinyModel(hidden: 16)))
        var b = a
        b.router.normalize = true
        XCTAssertNotEqual(modelFingerprint(config: a), modelFingerprint(config: b))
    }

    func testFNV1aKnownValues() {
        var h = FNV1a64()
        XCTAssertEqual(h.hexDigest, "fnv1a64:cbf29ce484222325")
        h.add("a")
        XCTAssertEqual(h.hexDigest, "fnv1a64:af63dc4c8601ec8c")
    }

    func testScoresCheckAgainstModel() throws {
        let model = try MethodTestSupport.tinyModel()
        let right = MethodTestSupport.scores(token: [1: [0.25, 0.25, 0.25, 0.25], 2: [0.4, 0.3, 0.2, 0.1]],
                                             fingerprint: modelFingerprint(config: model))
        XCTAssertTrue(try right.check(against: model, source: "s.json", modelSource: "config.json"))
        let other = try MethodTestSupport.tinyModel(hidden: 16)
        XCTAssertESFTError(try right.check(against: other, source: "s.json", modelSource: "other/config.json"),
                           "s.json", "model_fingerprint", "other/config.json", "different model")
        let unfingerprinted = MethodTestSupport.scores(token: [1: [0.25, 0.25, 0.25, 0.25], 2: [0.4, 0.3, 0.2, 0.1]])
        XCTAssertFalse(try unfingerprinted.check(against: model, source: "s.json", modelSource: "config.json"))
        XCTAssertESFTError(try unfingerprinted.check(against: try MethodTestSupport.tinyModel(layers: 4), source: "s.json", modelSource: "c"),
                           "metadata.layers")
        XCTAssertESFTError(try MethodTestSupport.scores(token: [1: [0.5, 0.5], 2: [0.5, 0.5]]).check(against: model, source: "s.json", modelSource: "c"),
                           "metadata.experts 2", "n_routed_experts 4")
    }

    func testReportCountsAndFormula() throws {
        let model = try MethodTestSupport.tinyModel()  // hidden 8, moe_intermediate 4: 96 parameters per expert
        let scores = MethodTestSupport.scores(token: [1: [0.1, 0.6, 0.2, 0.1], 2: [0.3, 0.3, 0.3, 0.1]])
        let options = SelectionOptions(method: .token, rule: .threshold(0.5))
        let selection = try selectExperts(from: scores, options: options)
        XCTAssertEqual(selection.map(\.experts), [[1], [0, 1]])
        let config = ExpertConfig(selection)
        let report = SelectionReport(options: options, layers: selection, experts: 4, config: config, model: model,
                                     scoresSource: "s.json")
        let total = model.parameterSpecs().reduce(0) { $0 + $1.shape.reduce(1, *) }
        XCTAssertEqual(report.expertsChosen, 3)
        XCTAssertEqual(report.expertsTotal, 8)
        XCTAssertEqual(report.parameters, SelectionReport.ParameterCounts(trainable: 3 * 96, total: total))
        XCTAssertEqual(report.parameters?.optimizerStateBytes, 3 * 96 * 16)
        XCTAssertTrue(report.text.contains("experts chosen: 3 of 8 routed experts (37.50%)"), report.text)
        XCTAssertTrue(report.text.contains("16 bytes per trainable parameter"), report.text)
        XCTAssertTrue(report.text.contains("    2        2            0.6000  0 1"), report.text)

        let json = try JSONSerialization.jsonObject(with: report.jsonData()) as! [String: Any]
        XCTAssertEqual(json["trainable_parameters"] as? Int, 288)
        XCTAssertEqual(json["optimizer_state_bytes"] as? Int, 288 * 16)
        XCTAssertEqual(json["experts_chosen"] as? Int, 3)
        XCTAssertEqual((json["layers"] as? [String: [String: Any]])?["2"]?["experts"] as? [Int], [0, 1])
        XCTAssertNotNil(json["optimizer_state_formula"] as? String)

        let without = SelectionReport(options: options, layers: selection, experts: 4, config: config, model: nil, scoresSource: "s.json")
        XCTAssertNil(without.parameters)
        XCTAssertTrue(without.text.contains("pass --model DIR or --config CONFIG.json"))
        XCTAssertTrue((try JSONSerialization.jsonObject(with: without.jsonData()) as! [String: Any])["trainable_parameters"] is NSNull)
    }

    func testReportNotesLayersShortOfThreshold() throws {
        var scores = MethodTestSupport.scores(token: [1: [0.5, 0.5]])
        scores.gate[1] = [0.02, 0.03]
        let options = SelectionOptions(method: .gate, rule: .threshold(0.1))
        let selection = try selectExperts(from: scores, options: options)
        let report = SelectionReport(options: options, layers: selection, experts: 2, config: ExpertConfig(selection),
                                     model: nil, scoresSource: "s")
        XCTAssertEqual(report.layersShortOfThreshold, [1])
        XCTAssertTrue(report.text.contains("every expert was taken"))
    }
}

import ESFTKernels
import ESFTModel
import ESFTTestSupport
import Foundation
import XCTest

final class ModelConfigTests: XCTestCase {
    private func fixtureJSON(_ name: String) throws -> [String: Any] {
        try JSONSerialization.jsonObject(with: Data(contentsOf: Fixtures.models.appendingPathComponent(name).appendingPathComponent("config.json"))) as! [String: Any]
    }

    private func assertRejects(_ json: [String: Any], mentioning needles: [String], file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try ModelConfig(json: json, source: "cfg.json"), file: file, line: line) { error in
            for n in needles { XCTAssert("\(error)".contains(n), "'\(error)' should mention '\(n)'", file: file, line: line) }
        }
    }

    func testBothRopeSpellingsGiveTheSameConfig() throws {
        var old = try fixtureJSON("lite_yarn_oldcfg")
        XCTAssertNotNil(old["rope_scaling"], "fixture uses the older spelling")
        let a = try ModelConfig(json: old, source: "old")
        var scaling = old.removeValue(forKey: "rope_scaling") as! [String: Any]
        scaling["rope_type"] = scaling.removeValue(forKey: "type")
        scaling["rope_theta"] = old.removeValue(forKey: "rope_theta")
        old["rope_parameters"] = scaling
        let b = try ModelConfig(json: old, source: "new")
        XCTAssertEqual(a, b)
        XCTAssertNotNil(a.yarn)
        XCTAssertEqual(a.yarn?.factor, 40)
    }

    func testYarnScaleAndFrequenciesFollowHF() throws {
        // mscale 1.0 vs mscale_all_dim 0.8 with factor 4: cos/sin factor (0.1·ln4+1)/(0.08·ln4+1).
        let cfg = try ModelConfig(json: try fixtureJSON("group_bf16_tied"), source: "f")
        let rope = RoPE(config: cfg)
        XCTAssertEqual(Double(rope.attentionFactor), (0.1 * log(4.0) + 1) / (0.08 * log(4.0) + 1), accuracy: 1e-6)
        let m = 0.08 * log(4.0) + 1
        XCTAssertEqual(Double(rope.softmaxScale), m * m / Double(cfg.attention.scoreDim).squareRoot(), accuracy: 1e-6)
        // The generator printed HF's inv_freq for this config: [1, 0.19764, 0.025, 0.0079].
        let expected: [Float] = [1, 0.19764, 0.025, 0.0079]
        for (x, y) in zip(rope.invFreq, expected) { XCTAssertEqual(x, y, accuracy: 1e-4 * max(y, 1e-3) + 5e-5) }
    }

    func testUnsupportedValuesNameTheField() throws {
        let base = try fixtureJSON("sharded_hf_saved")
        var j = base; j["model_type"] = "llama"
        assertRejects(j, mentioning: ["cfg.json", "model_type", "llama"])
        j = base; j.removeValue(forKey: "model_type")
        assertRejects(j, mentioning: ["model_type", "missing"])
        j = base; j["topk_method"] = "noaux_tc"
        assertRejects(j, mentioning: ["topk_method", "noaux_tc"])
        j = base; j["hidden_size"] = "32"
        assertRejects(j, mentioning: ["hidden_size", "integer"])
        j = base; j["hidden_size"] = 0
        assertRejects(j, mentioning: ["hidden_size", "positive"])
        j = base; j["q_lora_rank"] = -3
        assertRejects(j, mentioning: ["q_lora_rank"])
        j = base; j["norm_topk_prob"] = "yes"
        assertRejects(j, mentioning: ["norm_topk_prob"])
        j = base; j["rope_parameters"] = ["rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0]
        assertRejects(j, mentioning: ["rope_parameters", "linear"])
        j = base; j["num_experts_per_tok"] = 99
        assertRejects(j, mentioning: ["num_experts_per_tok"])
        j = base; j["hidden_act"] = "gelu"
        assertRejects(j, mentioning: ["hidden_act", "gelu"])
        j = base; j["qk_rope_head_dim"] = 5
        assertRejects(j, mentioning: ["qk_rope_head_dim", "even"])
    }

    func testMalformedConfigFileNamesTheFile() throws {
        let dir = try Fixtures.tempDirectory("cfg")
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("config.json")
        try Data("{\"model_type\": ".utf8).write(to: url)
        XCTAssertThrowsError(try ModelConfig.load(contentsOf: url)) { XCTAssert("\($0)".contains(url.path) && "\($0)".contains("JSON"), "\($0)") }
        XCTAssertThrowsError(try ModelConfig.load(contentsOf: dir.appendingPathComponent("absent.json"))) {
            XCTAssert("\($0)".contains("absent.json"), "\($0)")
        }
    }

    func testMoELayerRuleFollowsDeepSeek() throws {
        var j = try fixtureJSON("lite_yarn_oldcfg")
        j["num_hidden_layers"] = 6; j["first_k_dense_replace"] = 1; j["moe_layer_freq"] = 2
        let cfg = try ModelConfig(json: j, source: "x")
        XCTAssertEqual(cfg.moeLayers, [2, 4])
    }
}

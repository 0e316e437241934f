import ESFTKernels
import ESFTMethod
import ESFTModel
import Foundation
import XCTest

final class ExpertConfigTests: XCTestCase {
    func testRoundTripKeepsOrderAndFlags() throws {
        let config = ExpertConfig(experts: [1: [3, 0], 2: [1], 10: []], sharedExperts: true, nonExpertModules: false)
        let data = config.jsonData()
        let text = String(decoding: data, as: UTF8.self)
        XCTAssertTrue(text.contains("\"1\": [3, 0]"), text)
        XCTAssertLessThan(text.range(of: "\"2\"")!.lowerBound, text.range(of: "\"10\"")!.lowerBound, "numeric layer order")
        XCTAssertEqual(try ExpertConfig(jsonData: data, source: "cfg.json"), config)
    }

    func testReadsTheReferenceFormat() throws {
        let json = #"{"experts": {"1": [8, 26, 55], "2": [4]}, "shared_experts": false, "non_expert_modules": true}"#
        let c = try ExpertConfig(jsonData: Data(json.utf8), source: "ref.json")
        XCTAssertEqual(c.experts, [1: [8, 26, 55], 2: [4]])
        XCTAssertTrue(c.nonExpertModules)
        XCTAssertFalse(c.sharedExperts)
    }

    func testFileErrors() {
        XCTAssertESFTError(try ExpertConfig(jsonData: Data(#"{"experts": {"x": [1]}}"#.utf8), source: "c.json"),
                           "c.json", "key 'x'")
        XCTAssertESFTError(try ExpertConfig(jsonData: Data(#"{"experts": {"1": [1.5]}}"#.utf8), source: "c.json"),
                           "c.json", "experts.1[0]", "integer")
        XCTAssertESFTError(try ExpertConfig(jsonData: Data(#"{"experts": {"1": [1]}, "shared_experts": 1}"#.utf8), source: "c.json"),
                           "shared_experts", "true or false")
        XCTAssertESFTError(try ExpertConfig(jsonData: Data(#"{"layers": {}}"#.utf8), source: "c.json"), "unknown field 'layers'")
        XCTAssertESFTError(try ExpertConfig(jsonData: Data("[1]".utf8), source: "c.json"), "c.json", "JSON object")
    }

    func testValidationAgainstTheModel() throws {
        let model = try MethodTestSupport.tinyModel()  // MoE layers 1, 2; 4 experts
        XCTAssertNoThrow(try ExpertConfig(experts: [1: [0], 2: [3, 1]]).validate(against: model, source: "c.json"))
        XCTAssertESFTError(try ExpertConfig(experts: [0: [1], 1: [0], 2: [1]]).validate(against: model, source: "c.json"),
                           "c.json", "layer 0 is not an MoE layer")
        XCTAssertESFTError(try ExpertConfig(experts: [1: [0]]).validate(against: model, source: "c.json"),
                           "c.json", "MoE layer(s) 2 missing")
        XCTAssertESFTError(try ExpertConfig(experts: [1: [0], 2: [4]]).validate(against: model, source: "c.json"),
                           "c.json", "layer 2", "expert id 4", "0...3")
        XCTAssertESFTError(try ExpertConfig(experts: [1: [2, 0, 2], 2: [1]]).validate(against: model, source: "c.json"),
                           "c.json", "layer 1", "expert 2 is listed twice")
        var noShared = MethodTestSupport.tinyConfigJSON()
        noShared["n_shared_experts"] = 0
        let plain = try ModelConfig(json: noShared, source: "tiny")
        XCTAssertESFTError(try ExpertConfig(experts: [1: [0], 2: [0]], sharedExperts: true).validate(against: plain, source: "c.json"),
                           "shared_experts is true", "no shared experts")
    }

    func testTrainableParameterNames() throws {
        let model = try MethodTestSupport.tinyModel()
        let experts = ExpertConfig(experts: [1: [2], 2: [0, 3]])
        XCTAssertEqual(trainableParameterNames(experts, model: model), [
            "model.layers.1.mlp.experts.2.gate_proj.weight", "model.layers.1.mlp.experts.2.up_proj.weight",
            "model.layers.1.mlp.experts.2.down_proj.weight",
            "model.layers.2.mlp.experts.0.gate_proj.weight", "model.layers.2.mlp.experts.0.up_proj.weight",
            "model.layers.2.mlp.experts.0.down_proj.weight",
            "model.layers.2.mlp.experts.3.gate_proj.weight", "model.layers.2.mlp.experts.3.up_proj.weight",
            "model.layers.2.mlp.experts.3.down_proj.weight",
        ])

        var shared = experts
        shared.sharedExperts = true
        let withShared = trainableParameterNames(shared, model: model)
        XCTAssertEqual(withShared.count, 9 + 6)
        XCTAssertTrue(withShared.contains("model.layers.2.mlp.shared_experts.down_proj.weight"))

        var everythingElse = experts
        everythingElse.nonExpertModules = true
        let names = Set(trainableParameterNames(everythingElse, model: model))
        for n in ["model.embed_tokens.weight", "lm_head.weight", "model.norm.weight", "model.layers.0.mlp.gate_proj.weight",
                  "model.layers.1.mlp.gate.weight", "model.layers.2.self_attn.kv_b_proj.weight",
                  "model.layers.1.input_layernorm.weight"] {
            XCTAssertTrue(names.contains(n), n)
        }
        XCTAssertFalse(names.contains("model.layers.1.mlp.experts.0.up_proj.weight"), "unlisted experts stay frozen")
        XCTAssertFalse(names.contains("model.layers.1.mlp.shared_experts.up_proj.weight"))
        // Every tensor is exactly one of: routed expert, shared expert, non-expert.
        let all = ExpertConfig(experts: [1: [0, 1, 2, 3], 2: [0, 1, 2, 3]], sharedExperts: true, nonExpertModules: true)
        XCTAssertEqual(trainableParameterNames(all, model: model), model.parameterSpecs().map(\.name))
    }

    func testParameterRoles() {
        XCTAssertEqual(ModelFamily.deepseekV2.parameterID(named: "model.layers.3.mlp.experts.12.up_proj.weight")?.esftRole, .routedExpert(layer: 3, expert: 12))
        XCTAssertEqual(ModelFamily.deepseekV2.parameterID(named: "model.layers.3.mlp.shared_experts.up_proj.weight")?.esftRole, .sharedExpert(layer: 3))
        XCTAssertEqual(ModelFamily.deepseekV2.parameterID(named: "model.layers.3.mlp.gate.weight")?.esftRole, .nonExpert)
        XCTAssertEqual(ModelFamily.deepseekV2.parameterID(named: "model.layers.0.mlp.up_proj.weight")?.esftRole, .nonExpert)
        XCTAssertEqual(ModelFamily.deepseekV2.parameterID(named: "lm_head.weight")?.esftRole, .nonExpert)
    }
}

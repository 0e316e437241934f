import ESFTKernels
import ESFTModel
import ESFTStore
import ESFTTestSupport
import Foundation
import XCTest

/// The one parameter identity: every name the model has parses back to its ID, names written by
/// transformers parse, and anything that is not a DeepseekV2ForCausalLM parameter does not.
final class ParameterIDTests: XCTestCase {
    func testEveryFixtureSpecRoundTripsThroughItsName() throws {
        for name in try Fixtures.modelNames() {
            let config = try ModelConfig.load(contentsOf: Fixtures.models.appendingPathComponent(name).appendingPathComponent("config.json"))
            let specs = config.parameterSpecs()
            XCTAssertEqual(Set(specs.map(\.id)).count, specs.count, "\(name): IDs are unique")
            XCTAssertEqual(Set(specs.map(\.name)).count, specs.count, "\(name): names are unique")
            for s in specs {
                XCTAssertEqual(ModelFamily.deepseekV2.parameterID(named: s.name), s.id, "\(name): \(s.name)")
                XCTAssertEqual(ModelFamily.deepseekV2.tensorName(of: s.id), s.name)
            }
            // The counts the config implies: 3 tensors per routed expert per MoE layer.
            XCTAssertEqual(specs.filter { $0.id.routedExpert != nil }.count, 3 * config.nRoutedExperts * config.moeLayers.count, name)
        }
    }

    /// Names transformers itself wrote (save_pretrained, sharded): every one is a parameter ID.
    func testNamesWrittenByTransformersParse() throws {
        let url = Fixtures.models.appendingPathComponent("sharded_hf_saved/model.safetensors.index.json")
        let index = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
        let names = try XCTUnwrap(index["weight_map"] as? [String: String]).keys
        XCTAssertFalse(names.isEmpty)
        for n in names { XCTAssertEqual(ModelFamily.deepseekV2.parameterID(named: n).map(ModelFamily.deepseekV2.tensorName), n, n) }
    }

    func testKnownNames() {
        XCTAssertEqual(ModelFamily.deepseekV2.parameterID(named: "model.layers.3.mlp.experts.12.up_proj.weight"), .routedExpert(.up, layer: 3, expert: 12))
        XCTAssertEqual(ModelFamily.deepseekV2.parameterID(named: "model.layers.3.mlp.experts.12.up_proj.weight")?.routedExpert?.expert, 12)
        XCTAssertEqual(ModelFamily.deepseekV2.parameterID(named: "model.layers.0.mlp.down_proj.weight"), .denseMLP(.down, layer: 0))
        XCTAssertEqual(ModelFamily.deepseekV2.parameterID(named: "model.layers.2.mlp.shared_experts.gate_proj.weight"), .sharedExperts(.gate, layer: 2))
        XCTAssertEqual(ModelFamily.deepseekV2.parameterID(named: "model.layers.2.mlp.gate.weight"), .router(layer: 2))
        XCTAssertEqual(ModelFamily.deepseekV2.parameterID(named: "model.layers.5.self_attn.kv_a_proj_with_mqa.bias"), .attention(.kvABias, layer: 5))
        XCTAssertEqual(ModelFamily.deepseekV2.parameterID(named: "model.layers.10.post_attention_layernorm.weight"), .postAttentionNorm(layer: 10))
        XCTAssertEqual(ModelFamily.deepseekV2.parameterID(named: "model.embed_tokens.weight"), .embedTokens)
        XCTAssertEqual(ModelFamily.deepseekV2.parameterID(named: "lm_head.weight"), .lmHead)
        XCTAssertEqual(ModelFamily.deepseekV2.parameterID(named: "model.norm.weight"), .finalNorm)
        XCTAssertNil(ParameterID.router(layer: 2).routedExpert, "the router gate is not an expert")
        XCTAssertFalse(ParameterID.denseMLP(.up, layer: 0).isSharedExpert)
        XCTAssertEqual(ModelFamily.deepseekV2.fusedExpertName(of: .routedExpert(.gate, layer: 4, expert: 7)), "model.layers.4.mlp.experts.gate_up_proj")
        XCTAssertEqual(ModelFamily.deepseekV2.fusedExpertName(of: .routedExpert(.down, layer: 4, expert: 7)), "model.layers.4.mlp.experts.down_proj")
        XCTAssertNil(ModelFamily.deepseekV2.fusedExpertName(of: .sharedExperts(.down, layer: 4)))
    }

    func testNamesThatAreNotParametersDoNotParse() {
        for bad in ["", "model", "model.layers.1", "model.layers.07.input_layernorm.weight", "model.layers.+1.input_layernorm.weight",
                    "model.layers.-1.input_layernorm.weight", "model.layers.x.input_layernorm.weight",
                    "model.layers.1.mlp.experts.gate_up_proj", "model.layers.1.mlp.experts.down_proj",
                    "model.layers.1.mlp.experts.x.up_proj.weight", "model.layers.1.mlp.experts.01.up_proj.weight",
                    "model.layers.1.mlp.experts.1.up_proj.bias", "model.layers.1.mlp.experts.1.fc1.weight",
                    "model.layers.1.mlp.shared_experts.0.up_proj.weight", "model.layers.1.self_attn.rotary_emb.inv_freq",
                    "model.layers.1.self_attn.q_proj.bias", "model.layers.1.mlp.gate.e_score_correction_bias",
                    "model.layers.1.mlp.up_proj.weight.extra", "lm_head.bias", "transformer.wte.weight"] {
            XCTAssertNil(ModelFamily.deepseekV2.parameterID(named: bad), bad)
        }
    }

    func testTrainableSetLowestLayer() {
        XCTAssertEqual(TrainableSet([.lmHead, .finalNorm]).lowestLayer(numLayers: 4), 4, "only the head: backward stops above every layer")
        XCTAssertEqual(TrainableSet([.routedExpert(.up, layer: 2, expert: 1), .attention(.oProj, layer: 3)]).lowestLayer(numLayers: 4), 2)
        XCTAssertEqual(TrainableSet([.embedTokens, .lmHead]).lowestLayer(numLayers: 4), 0, "the embedding needs every layer's backward")
    }
}

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
                XCTAssertEqual(ParameterID(hfName: s.name), s.id, "\(name): \(s.name)")
                XCTAssertEqual(s.id.hfName, s.name)
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
        for n in names { XCTAssertEqual(ParameterID(hfName: n)?.hfName, n, n) }
    }

    func testKnownNames() {
        XCTAssertEqual(ParameterID(hfName: "model.layers.3.mlp.experts.12.up_proj.weight"), .routedExpert(.up, layer: 3, expert: 12))
        XCTAssertEqual(ParameterID(hfName: "model.layers.3.mlp.experts.12.up_proj.weight")?.routedExpert?.expert, 12)
        XCTAssertEqual(ParameterID(hfName: "model.layers.0.mlp.down_proj.weight"), .denseMLP(.down, layer: 0))
        XCTAssertEqual(ParameterID(hfName: "model.layers.2.mlp.shared_experts.gate_proj.weight"), .sharedExperts(.gate, layer: 2))
        XCTAssertEqual(ParameterID(hfName: "model.layers.2.mlp.gate.weight"), .router(layer: 2))
        XCTAssertEqual(ParameterID(hfName: "model.layers.5.self_attn.kv_a_proj_with_mqa.bias"), .attention(.kvABias, layer: 5))
        XCTAssertEqual(ParameterID(hfName: "model.layers.10.post_attention_layernorm.weight"), .postAttentionNorm(layer: 10))
        XCTAssertEqual(ParameterID(hfName: "model.embed_tokens.weight"), .embedTokens)
        XCTAssertEqual(ParameterID(hfName: "lm_head.weight"), .lmHead)
        XCTAssertEqual(ParameterID(hfName: "model.norm.weight"), .finalNorm)
        XCTAssertNil(ParameterID.router(layer: 2).routedExpert, "the router gate is not an expert")
        XCTAssertFalse(ParameterID.denseMLP(.up, layer: 0).isSharedExpert)
        XCTAssertEqual(ParameterID.routedExpert(.gate, layer: 4, expert: 7).hfFusedExpertName, "model.layers.4.mlp.experts.gate_up_proj")
        XCTAssertEqual(ParameterID.routedExpert(.down, layer: 4, expert: 7).hfFusedExpertName, "model.layers.4.mlp.experts.down_proj")
        XCTAssertNil(ParameterID.sharedExperts(.down, layer: 4).hfFusedExpertName)
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
            XCTAssertNil(ParameterID(hfName: bad), bad)
        }
    }

    func testTrainableSetLowestLayer() {
        XCTAssertEqual(TrainableSet([.lmHead, .finalNorm]).lowestLayer(numLayers: 4), 4, "only the head: backward stops above every layer")
        XCTAssertEqual(TrainableSet([.routedExpert(.up, layer: 2, expert: 1), .attention(.oProj, layer: 3)]).lowestLayer(numLayers: 4), 2)
        XCTAssertEqual(TrainableSet([.embedTokens, .lmHead]).lowestLayer(numLayers: 4), 0, "the embedding needs every layer's backward")
    }
}

import ESFTKernels
import ESFTModel
import ESFTStore
import ESFTTestSupport
import XCTest

/// Qwen3-MoE, Qwen2-MoE, OLMoE and Mixtral against transformers 5.25 (Tests/Fixtures/families, written by
/// scripts/gen_family_fixtures.py from each family's own model class in float64; scripts/README-family-fixtures.md):
/// logits, loss and the gradient of every stored weight, the experts chosen per token, from the weights as
/// `save_pretrained` wrote them. The bounds are those of HFParityTests (fp32 against a float64 reference:
/// logits within 1e-4 of their largest magnitude, loss 1e-4 relative, each gradient within 1e-3 of its
/// tensor's largest magnitude); the errors measured are printed (about 1e-6).
final class FamilyParityTests: XCTestCase {
    func fixtures() throws -> [ModelFixture] {
        let names = try Fixtures.familyNames()
        XCTAssertEqual(names.count, 8, "two fixtures per family")
        return try names.map { try ModelFixture($0, in: Fixtures.families) }
    }

    func testFixturesCoverEachFamilysFeatures() throws {
        let configs = try fixtures().map(\.checkpoint.config)
        func gqa(_ c: ModelConfig) -> GQAShape? { if case .gqa(let a) = c.attention { return a } else { return nil } }
        for family in [ModelFamily.qwen3MoE, .qwen2MoE, .olmoe, .mixtral] {
            let mine = configs.filter { $0.family == family }
            XCTAssertEqual(mine.count, 2, family.rawValue)
            XCTAssert(mine.contains { $0.tieWordEmbeddings } && mine.contains { !$0.tieWordEmbeddings }, "\(family): tied and untied")
        }
        XCTAssert(configs.contains { gqa($0).map { $0.kvHeads < $0.heads } == true }, "kv heads < heads")
        XCTAssert(configs.contains { gqa($0).map { $0.kvHeads == 1 } == true }, "one kv head")
        XCTAssert(configs.contains { c in c.family == .qwen3MoE && gqa(c).map { $0.headDim * $0.heads != c.hiddenSize } == true }, "explicit head_dim")
        XCTAssert(configs.contains { gqa($0)?.qkNorm == .perHead } && configs.contains { gqa($0)?.qkNorm == .fullWidth }, "both q/k norms")
        XCTAssert(configs.contains { gqa($0)?.qkvBias == true }, "q/k/v biases")
        XCTAssert(configs.contains { if case .gated = $0.sharedExperts { return true } else { return false } }, "a gated shared expert")
        XCTAssert(configs.contains { $0.moeLayers.count < $0.numLayers }, "dense layers by mlp_only_layers / decoder_sparse_step")
        XCTAssert(configs.contains { $0.family != .mixtral && $0.router.normalize } && configs.contains { !$0.router.normalize }, "norm_topk_prob both")
        XCTAssert(configs.contains { $0.paddingIdx != nil }, "a padding row")
    }

    /// Every tensor `save_pretrained` wrote is a parameter of the family (nothing left over), every name the
    /// family spells parses back to its identity, and names of other families' layouts do not parse.
    func testTensorNamesRoundTrip() throws {
        for f in try fixtures() {
            let c = f.checkpoint.config
            XCTAssertEqual(f.checkpoint.unusedTensorNames(), [], f.name)
            for s in c.parameterSpecs() {
                XCTAssertEqual(c.family.parameterID(named: s.name), s.id, "\(f.name): \(s.name)")
            }
        }
        XCTAssertEqual(ModelFamily.mixtral.parameterID(named: "model.layers.3.block_sparse_moe.experts.12.w3.weight"), .routedExpert(.up, layer: 3, expert: 12))
        XCTAssertEqual(ModelFamily.mixtral.parameterID(named: "model.layers.3.block_sparse_moe.gate.weight"), .router(layer: 3))
        XCTAssertNil(ModelFamily.mixtral.parameterID(named: "model.layers.3.mlp.experts.12.up_proj.weight"))
        XCTAssertEqual(ModelFamily.qwen2MoE.parameterID(named: "model.layers.0.mlp.shared_expert_gate.weight"), .sharedExpertGate(layer: 0))
        XCTAssertNil(ModelFamily.qwen3MoE.parameterID(named: "model.layers.0.mlp.shared_expert_gate.weight"), "qwen3 has no shared expert")
        XCTAssertNil(ModelFamily.qwen3MoE.parameterID(named: "model.layers.07.mlp.gate.weight"))
        for other in ["model.layers.0.self_attn.k_proj.weight", "model.layers.0.mlp.shared_expert.up_proj.weight",
                      "model.layers.0.block_sparse_moe.experts.1.w1.weight"] {
            XCTAssertNil(ModelFamily.deepseekV2.parameterID(named: other), "\(other) is not a DeepSeek-V2 name")
        }
    }

    /// transformers' switch-style load-balancing loss (coefficient 1, pooled over MoE layers and tokens) and its
    /// gradient alone: an infinite loss denominator zeroes the cross-entropy's gradient. Same bounds as the
    /// cross-entropy's; a weight used only after the last router has exactly zero aux gradient.
    func testSwitchBalanceLossAndGradientMatchTransformers() throws {
        for f in try fixtures() {
            let expectedAux = try XCTUnwrap(f.expectedArray("aux_loss"), f.name)[0]
            for p in f.parameters.ordered { p.makeTrainable() }
            f.model.auxLossAlpha = 1
            let result = try f.model.forward(f.batch, training: true, lossDenominator: .infinity)
            try f.model.backward()
            XCTAssertEqual(result.auxLoss, Double(expectedAux), accuracy: 1e-4 * Double(abs(expectedAux)), "\(f.name): aux_loss")
            var worst = 0.0
            for p in f.parameters.ordered {
                let expected = try XCTUnwrap(f.expectedArray("auxgrad." + p.name), "\(f.name): auxgrad.\(p.name)")
                let got = UnsafeBufferPointer(start: p.gradPointer, count: p.count)
                if expected.allSatisfy({ $0 == 0 }) {
                    XCTAssert(got.allSatisfy { $0 == 0 }, "\(f.name): auxgrad.\(p.name) should be zero")
                } else {
                    let err = relativeToMax(got, expected)
                    XCTAssertLessThan(err, 1e-3, "\(f.name): auxgrad.\(p.name)")
                    worst = max(worst, err)
                }
            }
            print("\(f.name): aux \(result.auxLoss) vs \(expectedAux), worst aux-gradient rel err \(worst)")
        }
    }

    func testLogitsLossEveryGradientAndRoutingMatchTransformers() throws {
        for f in try fixtures() {
            let name = f.name
            for p in f.parameters.ordered { p.makeTrainable() }
            var chosen: [Int: [Int32]] = [:]
            f.model.routingObserver = { view in
                chosen[view.layer] = Array(UnsafeBufferPointer(start: view.topkIdx, count: view.tokens * view.k))
            }
            let result = try f.model.forward(f.batch, training: true)
            f.model.routingObserver = nil
            try f.model.backward()

            let v = f.checkpoint.config.vocabSize
            let logitErr = relativeToMax(f.model.logits(count: f.batch.batch * f.batch.seqLen * v), try XCTUnwrap(f.expectedArray("logits")))
            XCTAssertLessThan(logitErr, 1e-4, "\(name): logits")
            let loss = try XCTUnwrap(f.expectedArray("loss"))[0]
            XCTAssertEqual(result.loss, Double(loss), accuracy: 1e-4 * Double(abs(loss)), "\(name): loss")

            let (checked, worst) = try assertEveryGradientMatches(f)

            // The same experts as transformers for every token (the fixture keeps each token's top-k ascending).
            let k = f.checkpoint.config.expertsPerToken
            XCTAssertEqual(Set(chosen.keys), Set(f.checkpoint.config.moeLayers), "\(name): MoE layers")
            for (layer, ids) in chosen {
                let expected = try XCTUnwrap(f.expectedArray("topk_idx.\(layer)"), "\(name): topk_idx.\(layer)").map { Int32($0) }
                let mine = stride(from: 0, to: ids.count, by: k).flatMap { ids[$0..<($0 + k)].sorted() }
                XCTAssertEqual(mine, expected, "\(name): layer \(layer) routing")
            }
            print("\(name): logits rel err \(logitErr), loss \(result.loss) vs \(loss), \(checked) gradients, worst rel err \(worst)")
        }
    }
}

/// Every parameter's gradient (after backward) within 1e-3 of its fixture tensor's largest magnitude, and
/// every `grad.` entry of the fixture checked; returns how many and the worst relative error.
func assertEveryGradientMatches(_ f: ModelFixture, file: StaticString = #filePath, line: UInt = #line) throws -> (Int, Double) {
    var checked = 0, worst = 0.0
    for p in f.parameters.ordered where !p.id.isBuffer {  // a buffer (DeepSeek-V3's selection bias) has no gradient
        let expected = try XCTUnwrap(f.expectedArray("grad." + p.name), "\(f.name): fixture has no grad.\(p.name)", file: file, line: line)
        let err = relativeToMax(UnsafeBufferPointer(start: p.gradPointer, count: p.count), expected)
        XCTAssertLessThan(err, 1e-3, "\(f.name): grad.\(p.name)", file: file, line: line)
        worst = max(worst, err); checked += 1
    }
    XCTAssertEqual(checked, f.expected.entries.keys.filter { $0.hasPrefix("grad.") }.count, "\(f.name): every fixture gradient checked",
                   file: file, line: line)
    return (checked, worst)
}

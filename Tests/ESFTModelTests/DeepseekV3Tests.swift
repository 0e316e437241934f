import ESFTKernels
import ESFTModel
import ESFTStore
import ESFTTestSupport
import XCTest

/// DeepSeek-V3 against transformers 5.25's `DeepseekV3ForCausalLM` (Tests/Fixtures/v3, written by
/// scripts/gen_v3_fixtures.py in float64; scripts/README-v3-fixtures.md): the sigmoid router choosing on
/// score + e_score_correction_bias with noaux_tc groups, its weights, MLA with and without rope_interleave,
/// logits, loss and every gradient. Bounds as HFParityTests' (fp32 against float64).
final class DeepseekV3Tests: XCTestCase {
    func fixtures() throws -> [ModelFixture] {
        let names = try Fixtures.names(in: Fixtures.v3)
        XCTAssertGreaterThanOrEqual(names.count, 3)
        return try names.map { try ModelFixture($0, in: Fixtures.v3) }
    }

    func testFixturesCoverTheV3Features() throws {
        let configs = try fixtures().map(\.checkpoint.config)
        func mla(_ c: ModelConfig) -> MLAShape? { if case .mla(let a) = c.attention { return a } else { return nil } }
        XCTAssert(configs.allSatisfy { $0.family == .deepseekV3 && $0.router.scoring == .sigmoid && $0.router.selectionBias })
        XCTAssert(configs.contains { mla($0)?.ropeInterleaved == true } && configs.contains { mla($0)?.ropeInterleaved == false }, "rope_interleave both")
        XCTAssert(configs.contains { $0.router.groups > 1 } && configs.contains { $0.router.groups == 1 }, "groups and none")
        XCTAssert(configs.contains { $0.router.normalize } && configs.contains { !$0.router.normalize }, "norm_topk_prob both")
        XCTAssert(configs.contains { $0.router.scale != 1 }, "routed_scaling_factor != 1")
        XCTAssert(configs.contains { $0.yarn != nil }, "YaRN")
    }

    /// Every tensor save_pretrained wrote is a parameter (the bias buffer included) with nothing left over, names
    /// round-trip, and DeepSeek-V2 does not take V3's bias name.
    func testTensorNamesRoundTrip() throws {
        for f in try fixtures() {
            XCTAssertEqual(f.checkpoint.unusedTensorNames(), [], f.name)
            let c = f.checkpoint.config
            XCTAssertEqual(c.parameterSpecs().filter(\.id.isBuffer).count, c.moeLayers.count, "\(f.name): one bias per MoE layer")
            for s in c.parameterSpecs() { XCTAssertEqual(c.family.parameterID(named: s.name), s.id, "\(f.name): \(s.name)") }
        }
        XCTAssertNil(ModelFamily.deepseekV2.parameterID(named: "model.layers.1.mlp.gate.e_score_correction_bias"))
        XCTAssertEqual(ModelFamily.deepseekV3.parameterID(named: "model.layers.1.mlp.gate.e_score_correction_bias"), .routerBias(layer: 1))
    }

    /// The FP8 block-scaled checkpoints too (Tests/Fixtures/v3fp8): loaded directly they are their bf16
    /// dequantization, which is what the reference ran.
    func testLogitsLossGradientsAndRoutingMatchTransformers() throws {
        let fp8 = try Fixtures.names(in: Fixtures.v3fp8).map { try ModelFixture($0, in: Fixtures.v3fp8) }
        XCTAssertFalse(fp8.isEmpty, "FP8 fixtures")
        for f in try fixtures() + fp8 {
            let name = f.name, c = f.checkpoint.config
            for p in f.parameters.ordered { p.makeTrainable() }
            var chosen: [Int: ([Int32], [Float])] = [:]
            f.model.routingObserver = { view in
                chosen[view.layer] = (Array(UnsafeBufferPointer(start: view.topkIdx, count: view.tokens * view.k)),
                                      Array(UnsafeBufferPointer(start: view.topkGate, count: view.tokens * view.k)))
            }
            let result = try f.model.forward(f.batch, training: true)
            f.model.routingObserver = nil
            try f.model.backward()
            let v = c.vocabSize
            let logitErr = relativeToMax(f.model.logits(count: f.batch.batch * f.batch.seqLen * v), try XCTUnwrap(f.expectedArray("logits")))
            XCTAssertLessThan(logitErr, 1e-4, "\(name): logits")
            let loss = try XCTUnwrap(f.expectedArray("loss"))[0]
            XCTAssertEqual(result.loss, Double(loss), accuracy: 1e-4 * Double(abs(loss)), "\(name): loss")
            let (checked, worst) = try assertEveryGradientMatches(f)
            // The bias is a buffer: never trained, never given a gradient.
            for p in f.parameters.ordered where p.id.isBuffer { XCTAssertNil(p.gradPointer, "\(name): \(p.name) is a buffer") }

            // The experts and their weights for every token: the weight is the chosen unbiased score, renormalised
            // when norm_topk_prob (+1e-20 as transformers), times routed_scaling_factor.
            let k = c.expertsPerToken
            XCTAssertEqual(Set(chosen.keys), Set(c.moeLayers), "\(name): MoE layers")
            var worstWeight = 0.0
            for (layer, (ids, scores)) in chosen {
                let expectedIds = try XCTUnwrap(f.expectedArray("topk_idx.\(layer)")).map { Int32($0) }
                let expectedWeights = try XCTUnwrap(f.expectedArray("topk_weight.\(layer)"))
                for t in 0..<(ids.count / k) {
                    let order = (0..<k).sorted { ids[t * k + $0] < ids[t * k + $1] }
                    XCTAssertEqual(order.map { ids[t * k + $0] }, Array(expectedIds[(t * k)..<(t * k + k)]), "\(name): layer \(layer) token \(t)")
                    // ESFT's gate score of a sigmoid router is the weight before routed_scaling_factor: it sums to 1
                    // over a token's experts under norm_topk_prob (K fp32 values of at most 1: a few ulps).
                    let gateSum = (0..<k).reduce(Float(0)) { $0 + scores[t * k + $1] }
                    if c.router.normalize { XCTAssertEqual(gateSum, 1, accuracy: 4e-7, "\(name): layer \(layer) token \(t) gate scores") }
                    for (j, i) in order.enumerated() {
                        let w = Double(scores[t * k + i] * c.router.scale), e = Double(expectedWeights[t * k + j])
                        // fp32 sigmoid of an fp32 logit against float64: a few ulps of the logit's magnitude.
                        XCTAssertEqual(w, e, accuracy: 1e-5 * max(1, abs(e)), "\(name): layer \(layer) token \(t) weight")
                        worstWeight = max(worstWeight, abs(w - e))
                    }
                }
            }
            print("\(name): logits rel err \(logitErr), \(checked) gradients, worst rel err \(worst), worst routing weight err \(worstWeight)")
        }
    }
}

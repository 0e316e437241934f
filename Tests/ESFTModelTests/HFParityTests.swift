import ESFTKernels
import ESFTModel
import ESFTStore
import ESFTTestSupport
import XCTest

/// The engine against Hugging Face transformers' DeepseekV2ForCausalLM (fixtures made by
/// scripts/gen_model_fixtures.py, reference computed in float64): logits and loss within 1e-4
/// relative, each gradient within 1e-3 of that tensor's largest magnitude.
final class HFParityTests: XCTestCase {
    func testFixturesCoverTheRequiredVariety() throws {
        let configs = try Fixtures.modelNames().map { try ModelFixture($0).checkpoint.config }
        XCTAssertGreaterThanOrEqual(configs.count, 3)
        func mla(_ c: ModelConfig) -> MLAShape? { if case .mla(let a) = c.attention { return a } else { return nil } }
        func firstDense(_ c: ModelConfig) -> Int { if case .deepseek(let f, _) = c.moeLayerRule { return f } else { return 0 } }
        XCTAssert(configs.contains { mla($0)?.qLoraRank == nil } && configs.contains { mla($0)?.qLoraRank != nil }, "q_lora_rank null and set")
        XCTAssert(configs.contains { $0.yarn != nil } && configs.contains { $0.yarn == nil }, "YaRN on and off")
        XCTAssert(configs.contains { firstDense($0) >= 1 }, "a dense first layer")
        XCTAssert(configs.contains { $0.sharedExperts.count == 0 } && configs.contains { $0.sharedExperts.count == 2 }, "shared experts 0 and 2")
        XCTAssert(configs.contains { $0.router.normalize } && configs.contains { !$0.router.normalize }, "norm_topk_prob both")
        XCTAssert(configs.contains { $0.router.method == .greedy } && configs.contains { $0.router.method == .groupLimitedGreedy })
        XCTAssert(configs.contains { $0.router.scale != 1 }, "routed_scaling_factor != 1")
        XCTAssert(configs.contains { $0.tieWordEmbeddings } && configs.contains { !$0.tieWordEmbeddings }, "tied and untied")
    }

    func testLogitsLossAndEveryGradientMatchHuggingFace() throws {
        for name in try Fixtures.modelNames() {
            let f = try ModelFixture(name)
            for p in f.parameters.ordered { p.makeTrainable() }
            XCTAssertGreaterThan(f.batch.batch, 1, "\(name): batch > 1")
            XCTAssert(f.batch.labels.contains(CrossEntropy.ignoreIndex), "\(name): some labels are -100")
            let result = try f.model.forward(f.batch, training: true)
            try f.model.backward()

            let v = f.checkpoint.config.vocabSize
            let logits = f.model.logits(count: f.batch.batch * f.batch.seqLen * v)
            let logitErr = relativeToMax(logits, try XCTUnwrap(f.expectedArray("logits")))
            XCTAssertLessThan(logitErr, 1e-4, "\(name): logits")
            let loss = try XCTUnwrap(f.expectedArray("loss"))[0]
            XCTAssertEqual(result.loss, Double(loss), accuracy: 1e-4 * Double(abs(loss)), "\(name): loss")

            let (checked, worst) = try assertEveryGradientMatches(f)
            print("\(name): logits rel err \(logitErr), \(checked) gradients, worst rel err \(worst)")
        }
    }

    /// Causal attention in small row blocks (several per sequence, the last one partial) still matches HF.
    func testBlockedCausalAttentionMatchesHuggingFace() throws {
        let saved = MoETransformer.attentionBlockRows
        defer { MoETransformer.attentionBlockRows = saved }
        for rows in [1, 3, 5] {
            MoETransformer.attentionBlockRows = rows
            for name in try Fixtures.modelNames() {
                let f = try ModelFixture(name)
                for p in f.parameters.ordered { p.makeTrainable() }
                _ = try f.model.forward(f.batch, training: true)
                try f.model.backward()
                let v = f.checkpoint.config.vocabSize
                XCTAssertLessThan(relativeToMax(f.model.logits(count: f.batch.batch * f.batch.seqLen * v), try XCTUnwrap(f.expectedArray("logits"))), 1e-4,
                                  "\(name), blocks of \(rows) rows: logits")
                for p in f.parameters.ordered where p.name.contains("self_attn") {
                    let expected = try XCTUnwrap(f.expectedArray("grad." + p.name))
                    XCTAssertLessThan(relativeToMax(UnsafeBufferPointer(start: p.gradPointer, count: p.count), expected), 1e-3,
                                      "\(name), blocks of \(rows) rows: grad.\(p.name)")
                }
            }
        }
    }

    /// DeepSeek's sequence-level balance loss (alpha 1, summed over MoE layers) and its gradient alone.
    func testAuxLossValueAndGradientMatchReference() throws {
        for name in try Fixtures.modelNames() {
            let f = try ModelFixture(name)
            guard let expectedAux = f.expectedArray("aux_loss") else { continue }
            for p in f.parameters.ordered { p.makeTrainable() }
            f.model.auxLossAlpha = 1
            // An infinite denominator zeroes the cross-entropy's gradient, leaving the aux loss's alone.
            let result = try f.model.forward(f.batch, training: true, lossDenominator: .infinity)
            try f.model.backward()
            XCTAssertEqual(result.auxLoss, Double(expectedAux[0]), accuracy: 1e-4 * Double(abs(expectedAux[0])), "\(name): aux_loss")
            var checked = 0
            for p in f.parameters.ordered {
                guard let expected = f.expectedArray("auxgrad." + p.name) else { continue }
                let maxMag = expected.reduce(0) { max($0, abs($1)) }
                let got = UnsafeBufferPointer(start: p.gradPointer, count: p.count)
                if maxMag == 0 {
                    XCTAssert(got.allSatisfy { $0 == 0 }, "\(name): auxgrad.\(p.name) should be zero")
                } else {
                    XCTAssertLessThan(relativeToMax(got, expected), 1e-3, "\(name): auxgrad.\(p.name)")
                }
                checked += 1
            }
            XCTAssertEqual(checked, f.parameters.ordered.count, "\(name): every aux gradient checked")
        }
    }

    /// Gradients of a trainable subset equal the same tensors' gradients when everything trains, and layers
    /// below the lowest trainable layer keep no activations.
    func testTrainableSubsetStopsBackwardAndMatches() throws {
        let name = try XCTUnwrap(Fixtures.modelNames().first)
        let f = try ModelFixture(name)
        let cfg = f.checkpoint.config
        let top = cfg.numLayers - 1
        let moeLayer = try XCTUnwrap(cfg.moeLayers.last)
        let chosen = ["model.layers.\(moeLayer).mlp.experts.1.up_proj.weight", "model.layers.\(top).self_attn.kv_b_proj.weight",
                      "model.norm.weight"]
        for n in chosen { try XCTUnwrap(f.parameters[n]).makeTrainable() }
        XCTAssertEqual(f.model.lowestTrainableLayer, min(moeLayer, top))
        _ = try f.model.forward(f.batch, training: true)
        try f.model.backward()
        for n in chosen {
            let p = try XCTUnwrap(f.parameters[n])
            let expected = try XCTUnwrap(f.expectedArray("grad." + n))
            XCTAssertLessThan(relativeToMax(UnsafeBufferPointer(start: p.gradPointer, count: p.count), expected), 1e-3, n)
        }
        XCTAssertEqual(f.parameters.trainable.count, chosen.count, "frozen tensors get no gradient buffer")
        // An inference forward after a training one must not need or change gradients.
        let before = try XCTUnwrap(f.parameters[chosen[0]]).gradient.map(Array.init)!
        _ = try f.model.forward(f.batch, training: false)
        XCTAssertEqual(try XCTUnwrap(f.parameters[chosen[0]]).gradient.map(Array.init)!, before)
        XCTAssertThrowsError(try f.model.backward(), "backward needs a training forward")
    }

    func testOnlyTopLayersKeepActivations() throws {
        let name = try XCTUnwrap(Fixtures.modelNames().first)
        let all = try ModelFixture(name), topOnly = try ModelFixture(name)
        for p in all.parameters.ordered { p.makeTrainable() }
        try XCTUnwrap(topOnly.parameters["model.norm.weight"]).makeTrainable()
        _ = try all.model.forward(all.batch, training: true)
        _ = try topOnly.model.forward(topOnly.batch, training: true)
        XCTAssertEqual(topOnly.model.lowestTrainableLayer, topOnly.checkpoint.config.numLayers)
        XCTAssertLessThan(topOnly.model.activationBytes, all.model.activationBytes,
                          "with only the head trainable, layers share one scratch set instead of keeping activations")
    }
}

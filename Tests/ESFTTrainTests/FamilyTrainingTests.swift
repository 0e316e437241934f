import ESFTKernels
import ESFTModel
import ESFTStore
import ESFTTestSupport
import Foundation
import XCTest

/// Every new family end to end under `esft train` as a user runs it: a model initialised from a copy of the
/// family fixture's config (the byte vocabulary of 259 ids, 16 experts top-4, 3 layers), random token rows, an ESFT
/// expert config over its own MoE layers (the keys are the model's layer indices, so Qwen's dense layers are
/// absent; the shared expert and its gate train where the family has one), the switch-style balance loss on;
/// 1 rank against `mpirun -n 2` (and full fine-tuning on 3 ranks for Qwen2-MoE, whose routers then train too). Bounds as TrainEquivalenceTests': each
/// step's loss within 1e-6 relative, weights within 5% of a step per step.
final class FamilyTrainingTests: XCTestCase {
    static let steps = 6, lr = 1e-3
    private var dir: URL!
    override func setUpWithError() throws { dir = try Fixtures.tempDirectory("family-train") }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    /// A model directory, dataset and expert config for the family of `fixture`; returns the model's MoE layers.
    private func prepare(_ fixture: String, in root: URL = Fixtures.families) throws -> (model: String, data: String, experts: String) {
        let d = dir.appendingPathComponent(fixture)
        try FileManager.default.createDirectory(at: d, withIntermediateDirectories: true)
        var cfg = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: root
            .appendingPathComponent(fixture).appendingPathComponent("config.json"))) as? [String: Any])
        cfg["vocab_size"] = 259; cfg["num_hidden_layers"] = 3; cfg["num_experts_per_tok"] = 4; cfg["pad_token_id"] = 258
        for key in ["num_experts", "num_local_experts", "n_routed_experts"] where cfg[key] != nil { cfg[key] = 16 }
        let config = d.appendingPathComponent("config.json"), model = d.appendingPathComponent("model")
        try JSONSerialization.data(withJSONObject: cfg).write(to: config)
        let data = d.appendingPathComponent("data.h5")
        if !FileManager.default.fileExists(atPath: model.path) {  // made once per test
            let r = try Executables.esft(["init", config.path, model.path, "--seed", "5", "--expert-shards", "4"])
            XCTAssertEqual(r.status, 0, r.stderr)
            try TokenDatasets.writeRandom(to: data, rows: 32, seqLen: 32, tokenRange: 2..<127, seed: 9)
        }
        let loaded = try ModelConfig.load(contentsOf: model.appendingPathComponent("config.json")), moe = loaded.moeLayers
        XCTAssertFalse(moe.isEmpty)
        let experts = d.appendingPathComponent("experts.json")
        let lists = moe.enumerated().map { "\"\($0.element)\": [\($0.offset % 16), 5, 11]" }.joined(separator: ", ")
        try Data(#"{"experts": {\#(lists)}, "shared_experts": \#(loaded.sharedExperts.width > 0), "non_expert_modules": false}"#.utf8).write(to: experts)
        return (model.path, data.path, experts.path)
    }

    private func train(_ p: (model: String, data: String, experts: String), _ mode: [String], ranks: Int, aux: String = "0.01",
                       tag: String) throws -> URL {
        let out = dir.appendingPathComponent(tag)
        let selection = mode.map { $0 == "EXPERTS" ? p.experts : $0 }
        let args = ["train", "--model", p.model, "--data", p.data, "--out", out.path, "--steps", "\(Self.steps)", "--batch-rows", "4",
                    "--lr", "\(Self.lr)", "--aux-alpha", aux, "--eval-every", "3", "--threads", "1"] + selection
        if ranks == 1 {
            let r = try Executables.esft(args)
            XCTAssertEqual(r.status, 0, "\(tag): \(r.stderr)")
        } else {
            if let why = MPIRun.unavailableReason { throw XCTSkip(why) }
            let r = try MPIRun.run(ranks: ranks, arguments: args, timeout: 600)
            XCTAssertFalse(r.timedOut, "\(tag) hung")
            XCTAssertEqual(r.status, 0, "\(tag): \(r.output)")
        }
        return out
    }

    private func losses(_ out: URL) throws -> [Double] {
        try String(contentsOf: out.appendingPathComponent("metrics.jsonl"), encoding: .utf8).split(separator: "\n")
            .compactMap { (try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])?["loss"] as? Double }
    }

    private func assertSameTraining(_ fixture: String, _ mode: [String], ranks: Int, aux: String = "0.01",
                                    in root: URL = Fixtures.families) throws {
        let p = try prepare(fixture, in: root)
        let one = try train(p, mode, ranks: 1, aux: aux, tag: "\(fixture)-1"), many = try train(p, mode, ranks: ranks, aux: aux, tag: "\(fixture)-\(ranks)")
        let a = try losses(one), b = try losses(many)
        XCTAssertEqual(a.count, Self.steps, fixture)
        XCTAssertEqual(a.count, b.count, fixture)
        for (x, y) in zip(a, b) { XCTAssertLessThanOrEqual(abs(x - y) / x, 1e-6, "\(fixture), \(ranks) ranks: loss \(y) vs \(x)") }
        let ta = try readSafetensorsFloats(one.appendingPathComponent("trained.safetensors"))
        let tb = try readSafetensorsFloats(many.appendingPathComponent("trained.safetensors"))
        XCTAssertEqual(Set(ta.keys), Set(tb.keys), fixture)
        XCTAssertFalse(ta.isEmpty, fixture)
        let bound = 0.05 * Self.lr * Double(Self.steps)
        var moved = 0.0
        for (name, x) in ta {
            let y = try XCTUnwrap(tb[name])
            XCTAssertLessThanOrEqual(Double(zip(x, y).reduce(0) { max($0, abs($1.0 - $1.1)) }), bound, "\(fixture), \(ranks) ranks: \(name)")
        }
        // The bound means something only if training moved the weights by much more than it: compare with the model.
        let base = try ModelDirectory(url: URL(fileURLWithPath: p.model))
        let loaded = try base.loadParameters()
        for (name, x) in ta {
            guard let param = loaded[name] else { continue }
            var original = [Float](repeating: 0, count: param.count)
            original.withUnsafeMutableBufferPointer { param.copyRows(0, param.shape[0], into: $0.baseAddress!) }
            moved = max(moved, Double(zip(x, original).reduce(0) { max($0, abs($1.0 - $1.1)) }))
        }
        XCTAssertGreaterThan(moved, 10 * bound, "\(fixture): the trained tensors moved")
        print("\(fixture): \(ta.count) trained tensors, losses \(a.map { String(format: "%.5f", $0) }), worst loss diff "
              + "\(zip(a, b).map { abs($0 - $1) / $0 }.max() ?? 0), largest move \(moved)")
    }

    /// Expert-config keys are the model's own layer indices of its MoE layers: keys counted from 1 (an ESFT port
    /// for Qwen3 elsewhere ships 1..L for an L-layer model) or naming a dense layer are refused, naming the key,
    /// before anything is written.
    func testExpertKeysAreTheModelsMoELayerIndices() throws {
        let p = try prepare("qwen3_gqa_dense0_sharded")   // mlp_only_layers [0]: layers 1 and 2 are MoE
        for (keys, bad) in [(["1", "2", "3"], "layer 3"), (["0", "1", "2"], "layer 0")] {
            let cfg = dir.appendingPathComponent("keys-\(bad.last!).json")
            let lists = keys.map { "\"\($0)\": [1]" }.joined(separator: ", ")
            try Data(#"{"experts": {\#(lists)}, "shared_experts": false, "non_expert_modules": false}"#.utf8).write(to: cfg)
            let out = dir.appendingPathComponent("keys-run")
            let r = try Executables.esft(["train", "--model", p.model, "--data", p.data, "--experts", cfg.path, "--steps", "1", "--out", out.path])
            XCTAssertEqual(r.status, 1, r.stderr)
            XCTAssert(r.stderr.contains("\(cfg.path): experts: \(bad) is not an MoE layer of the model (MoE layers: 1, 2)"), r.stderr)
            XCTAssertFalse(FileManager.default.fileExists(atPath: out.path))
        }
    }

    func testQwen3MoEESFTOnTwoRanks() throws { try assertSameTraining("qwen3_step2_mqa_tied_bf16", ["--experts", "EXPERTS"], ranks: 2) }
    func testQwen2MoEESFTWithSharedExpertOnTwoRanks() throws { try assertSameTraining("qwen2_normtopk_dense1_tied_bf16", ["--experts", "EXPERTS"], ranks: 2) }
    func testQwen2MoEFullOnThreeRanks() throws { try assertSameTraining("qwen2_shared_bias", ["--full"], ranks: 3) }
    func testOLMoEESFTOnTwoRanks() throws { try assertSameTraining("olmoe_mha_qknorm_pad", ["--experts", "EXPERTS"], ranks: 2) }
    /// DeepSeek-V3 (sigmoid router with its selection bias, noaux_tc groups, rotate-half MLA): ESFT on 2 ranks; it has
    /// no balance loss, so --aux-alpha must be 0 and any other value is refused before anything is written.
    func testDeepseekV3ESFTOnTwoRanks() throws {
        try assertSameTraining("v3_nolora_group8keep3_rotatehalf_bias", ["--experts", "EXPERTS"], ranks: 2, aux: "0", in: Fixtures.v3)
        let p = try prepare("v3_nolora_group8keep3_rotatehalf_bias", in: Fixtures.v3)
        let out = dir.appendingPathComponent("v3-aux")
        let r = try Executables.esft(["train", "--model", p.model, "--data", p.data, "--experts", p.experts, "--steps", "1",
                                      "--aux-alpha", "0.001", "--out", out.path])
        XCTAssertEqual(r.status, 1, r.stderr)
        XCTAssert(r.stderr.contains("--aux-alpha 0.001: ") && r.stderr.contains("has no auxiliary balance loss"), r.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: out.path))
    }

    /// DeepSeek-V3 fully fine-tuned on 3 ranks: the routers train, their selection bias (a buffer) never does.
    func testDeepseekV3FullOnThreeRanks() throws {
        try assertSameTraining("v3_hublike_qlora_yarn_group_sharded", ["--full"], ranks: 3, aux: "0", in: Fixtures.v3)
        let trained = try readSafetensorsFloats(dir.appendingPathComponent("v3_hublike_qlora_yarn_group_sharded-1/trained.safetensors"))
        XCTAssert(trained.keys.contains { $0.hasSuffix("mlp.gate.weight") }, "the routers train")
        XCTAssertFalse(trained.keys.contains { $0.hasSuffix("e_score_correction_bias") }, "the selection bias is never trained")
    }

    func testMixtralESFTOnTwoRanks() throws { try assertSameTraining("mixtral_gqa", ["--experts", "EXPERTS"], ranks: 2) }
}

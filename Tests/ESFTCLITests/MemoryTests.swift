import ESFTKernels
import ESFTTestSupport
import Foundation
import XCTest

/// Memory-leanness as the kernel accounts it (/proc/self/smaps_rollup of an `esft forward` process):
/// frozen experts cost page cache, not anonymous memory; a trainable parameter costs its owned copy
/// and its gradient (AdamW's two moments come with the optimizer, measured in the training tests).
final class MemoryTests: XCTestCase {
    private var dir: URL!
    override func setUpWithError() throws { dir = try Fixtures.tempDirectory("mem") }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    /// A tiny-vocabulary model whose routed experts dominate its size: 128 experts × 2 layers ≈ 100 MB.
    private func makeModel(experts: Int) throws -> URL {
        var config = try JSONSerialization.jsonObject(with: Data(contentsOf: Fixtures.root.deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("configs/tiny.json"))) as! [String: Any]
        config["hidden_size"] = 128; config["moe_intermediate_size"] = 256; config["n_routed_experts"] = experts
        config["num_experts_per_tok"] = 4
        let configURL = dir.appendingPathComponent("config-\(experts).json")
        try JSONSerialization.data(withJSONObject: config).write(to: configURL)
        let model = dir.appendingPathComponent("model-\(experts)")
        let r = try Executables.esft(["init", configURL.path, model.path, "--seed", "3"])
        XCTAssertEqual(r.status, 0, r.stderr)
        return model
    }

    private func tokens() throws -> String {
        var rng = SplitMix64(seed: 5)
        let rows = (0..<2).map { _ in (0..<64).map { _ in Int(rng.next() % 256) } }
        let url = dir.appendingPathComponent("tokens.json")
        try JSONSerialization.data(withJSONObject: ["input_ids": rows]).write(to: url)
        return url.path
    }

    /// (anonymous bytes, rss bytes) reported by `esft forward`.
    private func forwardMemory(_ model: URL, _ extra: [String] = []) throws -> (anonymous: Double, rss: Double) {
        let r = try Executables.esft(["forward", "--model", model.path, "--tokens", try tokens(),
                                      "--out", dir.appendingPathComponent("out-\(UUID()).safetensors").path, "--threads", "1"] + extra)
        XCTAssertEqual(r.status, 0, r.stderr)
        let line = try XCTUnwrap(r.stdout.split(separator: "\n").first { $0.hasPrefix("memory:") }, r.stdout)
        func mib(_ key: String) -> Double {
            let part = line.components(separatedBy: key)[1].trimmingCharacters(in: .whitespaces)
            return Double(part.split(separator: " ")[0])! * 1048576
        }
        return (mib("anonymous"), mib("rss"))
    }

    func testFrozenExpertsCostNoAnonymousMemory() throws {
        let small = try forwardMemory(try makeModel(experts: 16))
        let large = try forwardMemory(try makeModel(experts: 128))
        print(String(format: "forward, all frozen: 16 experts anonymous %.1f MiB; 128 experts anonymous %.1f MiB (experts on disk: %.0f MiB more)",
                     small.anonymous / 1048576, large.anonymous / 1048576, 112.0 * 2 * 3 * 256 * 128 * 4 / 1048576))
        XCTAssertLessThanOrEqual(large.anonymous, small.anonymous * 1.05 + 4 * 1048576,
                                 "8× the experts must not grow anonymous memory (they are mapped, not copied)")
    }

    func testTrainableExpertsCostTheirCopyAndGradient() throws {
        let model = try makeModel(experts: 64)
        // Same backward depth in both runs (the lowest trainable tensor is in layer 2), so activations match.
        let base = "model.layers.2.post_attention_layernorm.weight"
        let k = 32, perExpert = 3 * 256 * 128
        let experts = (0..<k).map { "model.layers.2.mlp.experts.\($0).*" }.joined(separator: ",")
        let without = try forwardMemory(model, ["--trainable", base])
        let with = try forwardMemory(model, ["--trainable", base + "," + experts])
        let perParameter = (with.anonymous - without.anonymous) / Double(k * perExpert)
        print(String(format: "%d trainable experts (%d parameters): +%.1f MiB anonymous, %.2f bytes per trainable parameter",
                     k, k * perExpert, (with.anonymous - without.anonymous) / 1048576, perParameter))
        XCTAssertEqual(perParameter, 8, accuracy: 1.5, "fp32 weight copy + gradient = 8 bytes per trainable parameter")
    }

    /// With the optimizer state, a trainable parameter costs 16 bytes: fp32 copy, gradient, two AdamW moments.
    func testTrainableExpertsCostSixteenBytesWithOptimizerState() throws {
        let model = try makeModel(experts: 64)
        let data = dir.appendingPathComponent("data.h5")
        try TokenDatasets.writeRandom(to: data, rows: 8, seqLen: 32, tokenRange: 32..<127, seed: 2)
        func anonymousAfterTraining(_ experts: [Int]) throws -> Double {
            let cfg = dir.appendingPathComponent("cfg-\(experts.count).json")
            let list = experts.map(String.init).joined(separator: ", ")
            try Data("{\"experts\": {\"1\": [], \"2\": [\(list)]}, \"shared_experts\": false, \"non_expert_modules\": false}".utf8).write(to: cfg)
            let out = dir.appendingPathComponent("run-\(experts.count)")
            let r = try Executables.esft(["train", "--model", model.path, "--data", data.path, "--experts", cfg.path, "--out", out.path,
                                          "--steps", "2", "--batch-rows", "2", "--threads", "1"])
            XCTAssertEqual(r.status, 0, r.stderr)
            let summary = try JSONSerialization.jsonObject(with: Data(contentsOf: out.appendingPathComponent("summary.json"))) as! [String: Any]
            let memory = (summary["memoryPerRank"] as! [[String: Any]])[0]
            return (memory["anonymousBytes"] as! NSNumber).doubleValue
        }
        // Same lowest trainable layer (2) in both runs, so activations are the same.
        let one = try anonymousAfterTraining([0]), many = try anonymousAfterTraining(Array(0..<33))
        let perParameter = (many - one) / Double(32 * 3 * 256 * 128)
        print(String(format: "train with 1 vs 33 trainable experts: +%.1f MiB anonymous, %.2f bytes per extra trainable parameter",
                     (many - one) / 1048576, perParameter))
        XCTAssertEqual(perParameter, 16, accuracy: 2, "weight copy + gradient + two AdamW moments = 16 bytes per trainable parameter")
    }
}

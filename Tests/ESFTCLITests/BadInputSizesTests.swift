import ESFTModel
import ESFTTestSupport
import Foundation
import XCTest

/// Class 1 of issue 15: configs whose sizes imply more than any machine has. Every command that reads a
/// config refuses them before allocating or writing, naming the file, the field and (for the memory and
/// disk checks) the bytes; none ends in a Swift runtime trap, none leaves a temporary folder.
final class BadInputSizesTests: BadInputTestCase {
    override class var tag: String { "sizes" }

    /// Values beyond the limits of ModelSizes.limits, one field each.
    private func hostileConfigs() throws -> [(path: String, field: String)] {
        [("vocab_size", 1_000_000_000_000), ("num_hidden_layers", 1_000_000_000), ("hidden_size", 1 << 20),
         ("n_routed_experts", 10_000_000), ("moe_intermediate_size", 1 << 30), ("max_position_embeddings", 1 << 40)]
            .map { field, value in (try! config("huge-\(field).json", [field: value]), field) }
    }

    /// A Hugging Face directory with `configPath` as its config.json and a fixture's weights (linked).
    private func huggingFaceDirectory(_ name: String, config configPath: String) throws -> String {
        let fm = FileManager.default, source = Fixtures.models.appendingPathComponent("group_bf16_tied")
        let url = dir.appendingPathComponent(name)
        try fm.createDirectory(at: url, withIntermediateDirectories: true)
        for f in ["model.safetensors", "inputs.json"] {
            try fm.createSymbolicLink(atPath: url.appendingPathComponent(f).path, withDestinationPath: source.appendingPathComponent(f).path)
        }
        try fm.copyItem(atPath: configPath, toPath: url.appendingPathComponent("config.json").path)
        return url.path
    }

    func testEveryCommandRefusesHostileSizes() throws {
        for (config, field) in try hostileConfigs() {
            let model = try modelDirectory("model-\(field)", config: config)
            try refuse(["init", config, path("out-\(field)")], mentions: [config, field])
            try refuse(["bench", "--config", config, "--steps", "1"], mentions: [config, field])
            try refuse(["inspect", model], mentions: [field])
            try refuse(["select", "--scores", path("scores.json"), "--method", "token", "--top-k", "1", "--config", config,
                        "--out", path("sel-\(field).json")], mentions: [config, field])
            try refuse(["train", "--model", model, "--data", path("data.h5"), "--full", "--out", path("run-\(field)")],
                       mentions: [field])
            try refuse(["score", "--model", model, "--data", path("data.h5"), "--tokens", "16", "--out", path("s-\(field).json")],
                       mentions: [field])
            try refuse(["export", model, path("hf-\(field)")], mentions: [field])
            let hf = try huggingFaceDirectory("hf-in-\(field)", config: config)
            try refuse(["import", hf, path("imported-\(field)")], mentions: [field])
            try refuse(["forward", "--model", hf, "--tokens", hf + "/inputs.json", "--out", path("f-\(field).safetensors")], mentions: [field])
        }
    }

    /// Within the per-field limits but, taken together, beyond this machine: the memory (bench) and disk
    /// (init) checks name the bytes. 4096 experts × 3 × 65536 × 16384 × 2 MoE layers ≈ 2.6e13 parameters, ~10⁵ GB
    /// as fp32: more than any test machine's memory or free disk.
    func testJobsThatCannotFitAreRefusedWithTheirBytes() throws {
        let config = try config("too-big.json", ["n_routed_experts": 4096, "moe_intermediate_size": 65536, "hidden_size": 16384])
        let bench = try refuse(["bench", "--config", config, "--steps", "1"], mentions: [config, "n_routed_experts", "of memory"])
        XCTAssertTrue(bench.contains(" TB") || bench.contains(" PB"), bench)
        let initialise = try refuse(["init", config, path("out-too-big")], mentions: [config, "on disk", "free on"])
        XCTAssertTrue(initialise.contains(" TB") || initialise.contains(" PB"), initialise)
        try refuse(["bench", "--sgemm", "10000000"], mentions: ["--sgemm", "fp32 matrices"])
    }

    /// Options whose sizes cannot fit: a 10⁶-token sequence (attention's 10¹² scores), 10¹¹ rows per step,
    /// a 10¹²-token row, a shard limit that overflows Int once in bytes.
    func testOptionSizesThatCannotFit() throws {
        try refuse(["bench", "--config", Self.tinyConfig.path, "--seq", "1000000", "--batch", "1", "--steps", "1"],
                   mentions: [Self.tinyConfig.path, "--seq 1000000", "attention scores", "of memory"])
        try refuse(["train", "--model", path("model"), "--data", path("data.h5"), "--full", "--out", path("run"), "--batch-rows", "100000000000"],
                   mentions: [path("model/config.json"), "100000000000 rows", "of memory"])
        try refuse(["data", "prepare", "--tokenizer", "bytes", "--input", path("chat.jsonl"), "--seq-len", "1000000000000", "--out", path("d.h5")],
                   mentions: ["--seq-len 1000000000000"])
        try refuse(["export", path("model"), path("hf"), "--max-shard-size", "1e300"], mentions: ["--max-shard-size"])
        try refuse(["bench", "--sgemm", "16", "--steps", "100000000000000"], mentions: ["--steps 100000000000000"])
    }

    /// ModelSizes counts from the fields alone what parameterSpecs() lists tensor by tensor: the memory and disk
    /// checks use that count, so it must be exact (integers below 2^53 are exact in Double).
    func testModelSizesMatchesTheParameterList() throws {
        // The shipped configs, every fixture's (q_lora null and set, attention bias, 0/1/2 shared experts, tied
        // heads), and one with MoE every other layer after the first three.
        var configs = ["tiny", "small", "medium", "deepseek-v2-lite"].map { Self.repository.appendingPathComponent("configs/\($0).json") }
        configs += try Fixtures.modelNames().map { Fixtures.models.appendingPathComponent("\($0)/config.json") }
        configs.append(URL(fileURLWithPath: try config("freq.json", ["num_hidden_layers": 8, "first_k_dense_replace": 3, "moe_layer_freq": 2,
                                                                      "tie_word_embeddings": true])))
        XCTAssertGreaterThanOrEqual(configs.count, 9)
        for url in configs {
            let c = try ModelConfig.load(contentsOf: url)
            let specs = c.parameterSpecs()
            let sizes = ModelSizes(c)
            XCTAssertEqual(sizes.parameters, Double(specs.reduce(0) { $0 + $1.count }), url.lastPathComponent)
            XCTAssertEqual(sizes.tensors, Double(specs.count), url.lastPathComponent)
            XCTAssertEqual(sizes.largestTensor, Double(specs.map(\.count).max()!), url.lastPathComponent)
            XCTAssertEqual(sizes.routedExpertParameters,
                           Double(specs.filter { $0.id.routedExpert != nil }.reduce(0) { $0 + $1.count }), url.lastPathComponent)
        }
    }
}

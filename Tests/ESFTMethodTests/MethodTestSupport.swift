import ESFTKernels
import ESFTMethod
import ESFTModel
import Foundation
import XCTest

/// Paths, tiny models and helpers shared by the method tests.
enum MethodTestSupport {
    /// The repository root (this file is Tests/ESFTMethodTests/MethodTestSupport.swift).
    static let repoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()

    /// ../shared/esft-reference next to the repository (not committed: see its README).
    static let referenceRoot = repoRoot.deletingLastPathComponent()
        .appendingPathComponent("shared").appendingPathComponent("esft-reference")

    /// routing/<task>, or an XCTSkip saying it is absent.
    static func referenceRouting(_ task: String) throws -> URL {
        let dir = referenceRoot.appendingPathComponent("routing").appendingPathComponent(task)
        guard FileManager.default.fileExists(atPath: dir.appendingPathComponent("summary.json").path) else {
            throw XCTSkip("reference routing logs \(dir.path) absent: place deepseek-ai/ESFT's results/ there to run this test")
        }
        return dir
    }

    static func tempDirectory() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("esft-method-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    /// A tiny DeepSeek-V2 config.json: layer 0 dense, layers 1...(layers-1) MoE with `experts` routed
    /// experts (top-`topK`) and one shared expert.
    static func tinyConfigJSON(layers: Int = 3, experts: Int = 4, topK: Int = 2, hidden: Int = 8) -> [String: Any] {
        ["model_type": "deepseek_v2", "vocab_size": 32, "hidden_size": hidden, "intermediate_size": 16,
         "moe_intermediate_size": 4, "num_hidden_layers": layers, "num_attention_heads": 2,
         "q_lora_rank": NSNull(), "kv_lora_rank": 4, "qk_nope_head_dim": 2, "qk_rope_head_dim": 2,
         "v_head_dim": 2, "n_routed_experts": experts, "n_shared_experts": 1, "num_experts_per_tok": topK,
         "first_k_dense_replace": 1, "moe_layer_freq": 1]
    }

    static func tinyModel(layers: Int = 3, experts: Int = 4, topK: Int = 2, hidden: Int = 8) throws -> ModelConfig {
        try ModelConfig(json: tinyConfigJSON(layers: layers, experts: experts, topK: topK, hidden: hidden), source: "tiny")
    }

    static func write(json: [String: Any], to url: URL) throws {
        try JSONSerialization.data(withJSONObject: json, options: [.sortedKeys]).write(to: url)
    }

    static func files(in dir: URL) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []).sorted()
    }

    /// Scores with the given per-layer token scores (gate scores = token scores / 2).
    static func scores(token: [Int: [Double]], topK: Int = 2, fingerprint: String? = nil) -> RelevanceScores {
        let layers = token.keys.sorted()
        let experts = token.values.first!.count
        return RelevanceScores(
            gate: token.mapValues { $0.map { $0 / 2 } }, token: token,
            metadata: ScoresMetadata(normalize: .samples, samples: 2, tokens: 10, topK: topK, experts: experts,
                                     layers: layers, modelFingerprint: fingerprint, source: "test"))
    }
}

/// Asserts `body` throws an ESFTError whose message contains every fragment.
func XCTAssertESFTError<T>(_ body: @autoclosure () throws -> T, _ fragments: String...,
                           file: StaticString = #filePath, line: UInt = #line) {
    do {
        _ = try body()
        XCTFail("expected an ESFTError containing \(fragments)", file: file, line: line)
    } catch let e as ESFTError {
        for f in fragments where !e.message.contains(f) {
            XCTFail("error '\(e.message)' does not contain '\(f)'", file: file, line: line)
        }
    } catch {
        XCTFail("expected an ESFTError, got \(error)", file: file, line: line)
    }
}

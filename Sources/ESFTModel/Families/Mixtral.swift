import ESFTKernels

/// Mixtral (`model_type: mixtral`, transformers' `MixtralForCausalLM`; Mixtral-8x7B, 8x22B): GQA without
/// biases, rotate-half RoPE (θ 1e6 by default), a softmax over the top-k logits (the chosen probabilities
/// always renormalised), every layer MoE with coarse experts of intermediate_size, stored as
/// `block_sparse_moe.experts.E.w1` (gate), `w3` (up), `w2` (down) with the router at `block_sparse_moe.gate`.
enum MixtralFamily {
    static let rules = GQAFamilyRules(
        family: .mixtral, expertCountKeys: ["num_local_experts"], expertWidthKey: "intermediate_size",
        defaultNormEps: 1e-5, defaultRopeTheta: 1_000_000, qkNorm: .none, biases: .none, alwaysNormalize: true,
        qwenLayerRule: false, gatedSharedExpert: false, moeModule: "block_sparse_moe",
        expertProjectionNames: [.gate: "w1", .up: "w3", .down: "w2"], defaultPadTokenId: nil)

    static func parseConfig(_ f: JSONReader) throws -> ModelConfig {
        if let window = try f.optionalField("sliding_window")?.int() {
            throw ESFTError(ErrorText.field(f.source, "sliding_window", "\(window) is not supported (only null: sliding-window attention is not implemented)"))
        }
        if let noise = try f.optionalField("router_jitter_noise")?.double(), noise != 0 {
            throw ESFTError(ErrorText.field(f.source, "router_jitter_noise", "\(noise) is not supported (only 0)"))
        }
        return try ModelConfig(gqa: rules, f)
    }
}

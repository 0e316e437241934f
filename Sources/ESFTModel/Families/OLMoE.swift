import ESFTKernels

/// OLMoE (`model_type: olmoe`, transformers' `OlmoeForCausalLM`; OLMoE-1B-7B): multi-head attention with
/// q/k RMSNorm over the whole projection (before the head split), rotate-half RoPE, softmax top-k without
/// renormalisation unless norm_topk_prob, every layer MoE with experts of intermediate_size, pad_token_id 1
/// by default (its embedding row gets no gradient from the lookup, as transformers' padding_idx).
enum OLMoEFamily {
    static let rules = GQAFamilyRules(
        family: .olmoe, expertCountKeys: ["num_experts"], expertWidthKey: "intermediate_size",
        defaultNormEps: 1e-5, defaultRopeTheta: 10000, qkNorm: .fullWidth, biases: .allFromAttentionBias, alwaysNormalize: false,
        qwenLayerRule: false, gatedSharedExpert: false, moeModule: "mlp", expertProjectionNames: GQAFamilyRules.gatedMLPNames,
        defaultPadTokenId: 1)

    static func parseConfig(_ f: JSONReader) throws -> ModelConfig {
        if let clip = try f.optionalField("clip_qkv")?.double() {
            throw ESFTError(ErrorText.field(f.source, "clip_qkv", "\(clip) is not supported (only null: clamping q, k and v is not implemented)"))
        }
        return try ModelConfig(gqa: rules, f)
    }
}

import ESFTKernels

/// Qwen2-MoE (`model_type: qwen2_moe`, transformers' `Qwen2MoeForCausalLM`; Qwen1.5-MoE-A2.7B, Qwen2-57B-A14B):
/// GQA with q/k/v biases (qkv_bias, default true; o_proj never), rotate-half RoPE, softmax top-k (renormalised
/// when norm_topk_prob), and one shared expert of shared_expert_intermediate_size on every token, scaled by
/// sigmoid(mlp.shared_expert_gate · x).
enum Qwen2MoEFamily {
    static let rules = GQAFamilyRules(
        family: .qwen2MoE, expertCountKeys: ["num_experts"], expertWidthKey: "moe_intermediate_size",
        defaultNormEps: 1e-6, defaultRopeTheta: 10000, qkNorm: .none, biases: .qkvFromQKVBias, alwaysNormalize: false,
        qwenLayerRule: true, gatedSharedExpert: true, moeModule: "mlp", expertProjectionNames: GQAFamilyRules.gatedMLPNames,
        defaultPadTokenId: nil)

    static func parseConfig(_ f: JSONReader) throws -> ModelConfig {
        if try f.optionalField("use_sliding_window")?.bool() == true {
            throw ESFTError(ErrorText.field(f.source, "use_sliding_window", "true is not supported (sliding-window attention is not implemented)"))
        }
        return try ModelConfig(gqa: rules, f)
    }
}

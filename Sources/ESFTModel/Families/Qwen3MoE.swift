import ESFTKernels

/// Qwen3-MoE (`model_type: qwen3_moe`, transformers' `Qwen3MoeForCausalLM`; Qwen3-30B-A3B, Qwen3-235B-A22B):
/// GQA with an explicit head_dim and per-head q/k RMSNorm, rotate-half RoPE, softmax top-k renormalised when
/// norm_topk_prob, no shared expert, dense layers by mlp_only_layers / decoder_sparse_step. transformers
/// writes the expert count as `num_local_experts`, hub checkpoints as `num_experts`: both are read.
enum Qwen3MoEFamily {
    static let rules = GQAFamilyRules(
        family: .qwen3MoE, expertCountKeys: ["num_experts", "num_local_experts"], expertWidthKey: "moe_intermediate_size",
        defaultNormEps: 1e-6, defaultRopeTheta: 10000, qkNorm: .perHead, biases: .allFromAttentionBias, alwaysNormalize: false,
        qwenLayerRule: true, gatedSharedExpert: false, moeModule: "mlp", expertProjectionNames: GQAFamilyRules.gatedMLPNames,
        defaultPadTokenId: nil)

    static func parseConfig(_ f: JSONReader) throws -> ModelConfig {
        if try f.optionalField("use_sliding_window")?.bool() == true {
            throw ESFTError(ErrorText.field(f.source, "use_sliding_window", "true is not supported (sliding-window attention is not implemented)"))
        }
        return try ModelConfig(gqa: rules, f)
    }
}

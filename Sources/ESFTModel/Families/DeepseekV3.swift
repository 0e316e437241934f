import ESFTKernels

/// DeepSeek-V3 (`model_type: deepseek_v3`, transformers' `DeepseekV3ForCausalLM`; DeepSeek-V3/R1, Moonlight,
/// Kimi-K2's shapes): MLA as DeepSeek-V2 (RoPE on interleaved pairs unless `rope_interleave` is false), a
/// sigmoid router whose choice is made on score + `e_score_correction_bias` (a buffer, never trained) with
/// groups ranked by the sum of their two best biased scores (`noaux_tc`), weights the chosen unbiased scores
/// (renormalised when norm_topk_prob, times routed_scaling_factor), N plain shared experts, the first
/// first_k_dense_replace layers dense, no auxiliary loss. Tensor names are DeepSeek-V2's plus the bias.
enum DeepseekV3Family {
    static func parseConfig(_ f: JSONReader) throws -> ModelConfig { try ModelConfig(deepseek: f, family: .deepseekV3) }

    static func parameterID(named name: String) -> ParameterID? {
        if case .layer(let layer, let rest, _)? = TensorNameParts(name), rest == "mlp.gate.e_score_correction_bias" {
            return .routerBias(layer: layer)
        }
        return DeepseekV2Family.parameterID(named: name)
    }

    /// DeepSeek-V2's fields, then V3's own.
    static func fingerprintFields(_ c: ModelConfig) -> [(String, String)] {
        guard case .mla(let a) = c.attention else { return [] }
        var fields = DeepseekV2Family.fingerprintFields(c)
        if let i = fields.firstIndex(where: { $0.0 == "model_type" }) { fields[i].1 = ModelFamily.deepseekV3.rawValue }
        return fields + [("scoring_func", c.router.scoring.rawValue), ("rope_interleave", "\(a.ropeInterleaved)")]
    }
}

import ESFTBase
import ESFTModel

/// A fingerprint of a model's architecture: FNV-1a 64 over the config fields that change the math and
/// every parameter's name and shape. Two configs with the same fingerprint route and train alike given
/// the same weights; the weights themselves are not hashed (that would mean reading the whole model),
/// so a fine-tuned copy of a model shares its base model's fingerprint.
public func modelFingerprint(config c: ModelConfig) -> String {
    var h = FNV1a64()
    h.add(canonicalDescription(of: c))
    for spec in c.parameterSpecs() {
        h.add(spec.name + ":" + spec.shape.map(String.init).joined(separator: "x") + ";")
    }
    return h.hexDigest
}

/// Fixed field order and Swift's shortest round-trip number spelling keep this stable across runs.
func canonicalDescription(of c: ModelConfig) -> String {
    var fields: [(String, String)] = [
        ("model_type", "deepseek_v2"),
        ("vocab_size", "\(c.vocabSize)"), ("hidden_size", "\(c.hiddenSize)"),
        ("intermediate_size", "\(c.intermediateSize)"), ("moe_intermediate_size", "\(c.moeIntermediateSize)"),
        ("num_hidden_layers", "\(c.numLayers)"), ("num_attention_heads", "\(c.numHeads)"),
        ("q_lora_rank", c.qLoraRank.map { "\($0)" } ?? "null"), ("kv_lora_rank", "\(c.kvLoraRank)"),
        ("qk_nope_head_dim", "\(c.qkNopeHeadDim)"), ("qk_rope_head_dim", "\(c.qkRopeHeadDim)"),
        ("v_head_dim", "\(c.vHeadDim)"), ("attention_bias", "\(c.attentionBias)"),
        ("n_routed_experts", "\(c.nRoutedExperts)"), ("n_shared_experts", "\(c.nSharedExperts)"),
        ("num_experts_per_tok", "\(c.expertsPerToken)"), ("first_k_dense_replace", "\(c.firstKDenseReplace)"),
        ("moe_layer_freq", "\(c.moeLayerFreq)"), ("topk_method", c.topkMethod.rawValue),
        ("n_group", "\(c.nGroup)"), ("topk_group", "\(c.topkGroup)"), ("norm_topk_prob", "\(c.normTopkProb)"),
        ("routed_scaling_factor", "\(c.routedScalingFactor)"), ("rms_norm_eps", "\(c.rmsNormEps)"),
        ("rope_theta", "\(c.ropeTheta)"), ("tie_word_embeddings", "\(c.tieWordEmbeddings)"),
        ("max_position_embeddings", "\(c.maxPositionEmbeddings)"),
    ]
    if let y = c.yarn {
        fields += [
            ("yarn.factor", "\(y.factor)"), ("yarn.original_max_position_embeddings", "\(y.originalMaxPositionEmbeddings)"),
            ("yarn.beta_fast", "\(y.betaFast)"), ("yarn.beta_slow", "\(y.betaSlow)"),
            ("yarn.mscale", y.mscale.map { "\($0)" } ?? "null"),
            ("yarn.mscale_all_dim", y.mscaleAllDim.map { "\($0)" } ?? "null"),
            ("yarn.attention_factor", y.attentionFactor.map { "\($0)" } ?? "null"),
            ("yarn.truncate", "\(y.truncate)"),
        ]
    } else {
        fields.append(("rope_scaling", "null"))
    }
    return fields.map { "\($0.0)=\($0.1);" }.joined()
}

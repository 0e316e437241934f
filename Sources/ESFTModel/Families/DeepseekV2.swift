import ESFTKernels

/// DeepSeek-V2 (`model_type: deepseek_v2`, transformers' `DeepseekV2ForCausalLM`): MLA attention, softmax
/// routing (greedy or group-limited by the group's best score), N plain shared experts, the first
/// `first_k_dense_replace` layers dense. Tensor names are those of DeepSeek's released checkpoints, routed
/// experts one by one (`model.layers.L.mlp.experts.E.up_proj.weight`).
enum DeepseekV2Family {
    static func parseConfig(_ f: JSONReader) throws -> ModelConfig { try ModelConfig(deepseekV2: f) }

    static func tensorName(of id: ParameterID) -> String {
        let l = "model.layers.\(id.layer ?? -1)."
        switch id.kind {
        case .embedTokens: return "model.embed_tokens.weight"
        case .finalNorm: return "model.norm.weight"
        case .lmHead: return "lm_head.weight"
        case .attention(let t): return l + "self_attn." + t.rawValue
        case .inputNorm: return l + "input_layernorm.weight"
        case .postAttentionNorm: return l + "post_attention_layernorm.weight"
        case .router: return l + "mlp.gate.weight"
        case .denseMLP(let p): return l + "mlp." + p.rawValue + ".weight"
        case .sharedExperts(let p): return l + "mlp.shared_experts." + p.rawValue + ".weight"
        case .routedExpert(let p): return l + "mlp.experts.\(id.expert ?? -1)." + p.rawValue + ".weight"
        }
    }

    static func fusedExpertName(of id: ParameterID) -> String? {
        guard case .routedExpert(let p) = id.kind, let layer = id.layer else { return nil }
        return "model.layers.\(layer).mlp.experts." + (p == .down ? "down_proj" : "gate_up_proj")
    }

    static func parameterID(named name: String) -> ParameterID? {
        switch name {
        case "model.embed_tokens.weight": return .embedTokens
        case "model.norm.weight": return .finalNorm
        case "lm_head.weight": return .lmHead
        default: break
        }
        let parts = name.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count >= 4, parts[0] == "model", parts[1] == "layers", let layer = tensorIndex(parts[2]) else { return nil }
        let rest = parts[3...].joined(separator: ".")
        if rest == "input_layernorm.weight" { return .inputNorm(layer: layer) }
        if rest == "post_attention_layernorm.weight" { return .postAttentionNorm(layer: layer) }
        if rest == "mlp.gate.weight" { return .router(layer: layer) }
        if rest.hasPrefix("self_attn."), let t = ParameterID.AttentionTensor(rawValue: String(rest.dropFirst("self_attn.".count))) {
            return .attention(t, layer: layer)
        }
        // mlp.P.weight, mlp.shared_experts.P.weight, mlp.experts.E.P.weight
        let mlp = parts[3...]
        guard mlp.first == "mlp", mlp.last == "weight", let p = ParameterID.Projection(rawValue: String(mlp[mlp.endIndex - 2])) else { return nil }
        switch mlp.count {
        case 3: return .denseMLP(p, layer: layer)
        case 4 where mlp[mlp.startIndex + 1] == "shared_experts": return .sharedExperts(p, layer: layer)
        case 5 where mlp[mlp.startIndex + 1] == "experts":
            guard let e = tensorIndex(mlp[mlp.startIndex + 2]) else { return nil }
            return .routedExpert(p, layer: layer, expert: e)
        default: return nil
        }
    }

    /// The fields (and their order and spelling) of the fingerprints every earlier esft wrote for this family.
    static func fingerprintFields(_ c: ModelConfig) -> [(String, String)] {
        var fields: [(String, String)] = [
            ("model_type", ModelFamily.deepseekV2.rawValue),
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
        return fields
    }
}

extension ModelConfig {
    /// DeepSeek-V2's config.json (model_type already checked). Errors name the file and the field.
    init(deepseekV2 f: JSONReader) throws {
        family = .deepseekV2
        let source = f.source
        if let act = try f.optionalField("hidden_act")?.string(), act != "silu" {
            throw ESFTError("\(source): hidden_act '\(act)' is not supported (supported: silu)")
        }
        if try f.optionalField("mlp_bias")?.bool() == true {
            throw ESFTError("\(source): mlp_bias true is not supported (DeepSeek-V2 MLPs have no bias)")
        }
        if let scoring = try f.optionalField("scoring_func")?.string(), scoring != "softmax" {
            throw ESFTError("\(source): scoring_func '\(scoring)' is not supported (supported: softmax)")
        }
        if let drop = try f.optionalField("attention_dropout")?.double(), drop != 0 {
            throw ESFTError("\(source): attention_dropout \(drop) is not supported (only 0)")
        }

        vocabSize = try positiveInt(f, "vocab_size")
        hiddenSize = try positiveInt(f, "hidden_size")
        intermediateSize = try positiveInt(f, "intermediate_size")
        numLayers = try positiveInt(f, "num_hidden_layers")
        numHeads = try positiveInt(f, "num_attention_heads")
        if let kvHeads = try f.optionalField("num_key_value_heads")?.int(), kvHeads != numHeads {
            throw ESFTError("\(source): num_key_value_heads \(kvHeads) must equal num_attention_heads \(numHeads) for MLA")
        }
        qLoraRank = try f.optionalField("q_lora_rank")?.int()
        if let r = qLoraRank, r <= 0 { throw ESFTError("\(source): q_lora_rank must be null or positive, got \(r)") }
        kvLoraRank = try positiveInt(f, "kv_lora_rank")
        qkNopeHeadDim = try positiveInt(f, "qk_nope_head_dim")
        qkRopeHeadDim = try positiveInt(f, "qk_rope_head_dim")
        guard qkRopeHeadDim % 2 == 0 else {
            throw ESFTError("\(source): qk_rope_head_dim must be even (RoPE rotates pairs), got \(qkRopeHeadDim)")
        }
        vHeadDim = try positiveInt(f, "v_head_dim")
        attentionBias = try f.optionalField("attention_bias")?.bool() ?? false

        nRoutedExperts = try f.optionalField("n_routed_experts")?.int() ?? 0
        nSharedExperts = try f.optionalField("n_shared_experts")?.int() ?? 0
        moeIntermediateSize = try f.optionalField("moe_intermediate_size")?.int() ?? 0
        expertsPerToken = try f.optionalField("num_experts_per_tok")?.int() ?? 0
        firstKDenseReplace = try f.optionalField("first_k_dense_replace")?.int() ?? 0
        moeLayerFreq = try f.optionalField("moe_layer_freq")?.int() ?? 1
        let method = try f.optionalField("topk_method")?.string() ?? "greedy"
        guard let m = TopKMethod(rawValue: method) else {
            throw ESFTError("\(source): topk_method '\(method)' is not supported (supported: greedy, group_limited_greedy)")
        }
        topkMethod = m
        nGroup = try f.optionalField("n_group")?.int() ?? 1
        topkGroup = try f.optionalField("topk_group")?.int() ?? 1
        normTopkProb = try f.optionalField("norm_topk_prob")?.bool() ?? false
        routedScalingFactor = Float(try f.optionalField("routed_scaling_factor")?.double() ?? 1)
        rmsNormEps = Float(try f.optionalField("rms_norm_eps")?.double() ?? 1e-6)
        tieWordEmbeddings = try f.optionalField("tie_word_embeddings")?.bool() ?? false
        maxPositionEmbeddings = try f.optionalField("max_position_embeddings")?.int() ?? 2048
        initializerRange = try f.optionalField("initializer_range")?.double() ?? 0.02

        if nRoutedExperts < 0 || nSharedExperts < 0 || firstKDenseReplace < 0 {
            throw ESFTError("\(source): n_routed_experts, n_shared_experts and first_k_dense_replace must be ≥ 0")
        }
        if nRoutedExperts > 0 {
            guard moeIntermediateSize > 0 else { throw ESFTError("\(source): moe_intermediate_size must be positive") }
            guard expertsPerToken >= 1 && expertsPerToken <= nRoutedExperts else {
                throw ESFTError("\(source): num_experts_per_tok \(expertsPerToken) must be in 1...n_routed_experts (\(nRoutedExperts))")
            }
            guard moeLayerFreq >= 1 else { throw ESFTError("\(source): moe_layer_freq must be ≥ 1, got \(moeLayerFreq)") }
            if topkMethod == .groupLimitedGreedy {
                guard nGroup >= 1, nRoutedExperts % nGroup == 0 else {
                    throw ESFTError("\(source): n_group \(nGroup) must divide n_routed_experts \(nRoutedExperts)")
                }
                guard topkGroup >= 1, topkGroup <= nGroup, topkGroup * (nRoutedExperts / nGroup) >= expertsPerToken else {
                    throw ESFTError("\(source): topk_group \(topkGroup) must be in 1...n_group and its groups must hold ≥ num_experts_per_tok experts")
                }
            }
        }
        (ropeTheta, yarn) = try ModelConfig.parseRope(f, maxPositionEmbeddings: maxPositionEmbeddings, source: source)
        try ModelConfigChecks.check(self, f)
    }
}

import ESFTKernels

/// DeepSeek-V2 (`model_type: deepseek_v2`, transformers' `DeepseekV2ForCausalLM`): MLA attention, softmax
/// routing (greedy or group-limited by the group's best score), N plain shared experts, the first
/// `first_k_dense_replace` layers dense. Tensor names are those of DeepSeek's released checkpoints, routed
/// experts one by one (`model.layers.L.mlp.experts.E.up_proj.weight`).
enum DeepseekV2Family {
    static func parseConfig(_ f: JSONReader) throws -> ModelConfig { try ModelConfig(deepseek: f, family: .deepseekV2) }

    static func tensorName(of id: ParameterID) -> String {
        TensorNameParts.name(of: id) { l in
            switch id.kind {
            case .routerBias: return l + "mlp.gate.e_score_correction_bias"  // DeepSeek-V3's buffer; never in V2's specs
            case .sharedExperts(let p): return l + "mlp.shared_experts." + p.rawValue + ".weight"
            case .sharedExpertGate: return l + "mlp.shared_experts.gate.weight"  // not a DeepSeek tensor: never in its specs
            case .routedExpert(let p): return l + "mlp.experts.\(id.expert ?? -1)." + p.rawValue + ".weight"
            default: return l + "mlp.gate.weight"  // the router (the other kinds are spelled by TensorNameParts)
            }
        }
    }

    /// MLA's tensors (names of GQA's, such as `k_proj`, are not DeepSeek-V2 parameters).
    static let mlaTensors: Set<ParameterID.AttentionTensor> = [.qProj, .qAProj, .qABias, .qANorm, .qBProj, .kvAProj, .kvABias,
                                                               .kvANorm, .kvBProj, .oProj, .oBias]

    static func fusedExpertName(of id: ParameterID) -> String? {
        guard case .routedExpert(let p) = id.kind, let layer = id.layer else { return nil }
        return "model.layers.\(layer).mlp.experts." + (p == .down ? "down_proj" : "gate_up_proj")
    }

    static func parameterID(named name: String) -> ParameterID? {
        guard let split = TensorNameParts(name) else { return nil }
        guard case .layer(let layer, let rest, let mlp) = split else { if case .global(let id) = split { return id }; return nil }
        if rest == "input_layernorm.weight" { return .inputNorm(layer: layer) }
        if rest == "post_attention_layernorm.weight" { return .postAttentionNorm(layer: layer) }
        if rest == "mlp.gate.weight" { return .router(layer: layer) }
        if rest.hasPrefix("self_attn."), let t = ParameterID.AttentionTensor(rawValue: String(rest.dropFirst("self_attn.".count))),
           mlaTensors.contains(t) {
            return .attention(t, layer: layer)
        }
        // mlp.P.weight, mlp.shared_experts.P.weight, mlp.experts.E.P.weight
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
        // A deepseek_v2 config always holds MLA and the DeepSeek layer rule (parseConfig makes nothing else).
        guard case .mla(let a) = c.attention, case .deepseek(let firstDense, let every) = c.moeLayerRule else { return [] }
        let r = c.router
        var fields: [(String, String)] = [
            ("model_type", ModelFamily.deepseekV2.rawValue),
            ("vocab_size", "\(c.vocabSize)"), ("hidden_size", "\(c.hiddenSize)"),
            ("intermediate_size", "\(c.intermediateSize)"), ("moe_intermediate_size", "\(c.moeIntermediateSize)"),
            ("num_hidden_layers", "\(c.numLayers)"), ("num_attention_heads", "\(a.heads)"),
            ("q_lora_rank", a.qLoraRank.map { "\($0)" } ?? "null"), ("kv_lora_rank", "\(a.kvLoraRank)"),
            ("qk_nope_head_dim", "\(a.qkNopeHeadDim)"), ("qk_rope_head_dim", "\(a.qkRopeHeadDim)"),
            ("v_head_dim", "\(a.vHeadDim)"), ("attention_bias", "\(a.bias)"),
            ("n_routed_experts", "\(c.nRoutedExperts)"), ("n_shared_experts", "\(c.sharedExperts.count)"),
            ("num_experts_per_tok", "\(c.expertsPerToken)"), ("first_k_dense_replace", "\(firstDense)"),
            ("moe_layer_freq", "\(every)"), ("topk_method", r.method.rawValue),
            ("n_group", "\(r.groups)"), ("topk_group", "\(r.keepGroups)"), ("norm_topk_prob", "\(r.normalize)"),
            ("routed_scaling_factor", "\(r.scale)"), ("rms_norm_eps", "\(c.rmsNormEps)"),
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
    /// A DeepSeek-V2 or -V3 config.json (model_type already checked): MLA and DeepSeek's MoE, V3 with its
    /// sigmoid router, selection bias and rope_interleave. Errors name the file and the field.
    init(deepseek f: JSONReader, family: ModelFamily) throws {
        self.family = family
        let source = f.source, v3 = family == .deepseekV3
        let scoringName = try f.optionalField("scoring_func")?.string() ?? (v3 ? "sigmoid" : "softmax")
        guard scoringName == (v3 ? "sigmoid" : "softmax") else {
            throw ESFTError("\(source): scoring_func '\(scoringName)' is not supported (supported: \(v3 ? "sigmoid" : "softmax"))")
        }
        (vocabSize, hiddenSize, intermediateSize, numLayers) = try ModelConfig.commonFields(f, family: v3 ? "DeepSeek-V3" : "DeepSeek-V2")
        let heads = try positiveInt(f, "num_attention_heads")
        if let kvHeads = try f.optionalField("num_key_value_heads")?.int(), kvHeads != heads {
            throw ESFTError("\(source): num_key_value_heads \(kvHeads) must equal num_attention_heads \(heads) for MLA")
        }
        let qLoraRank = try f.optionalField("q_lora_rank")?.int()
        if let r = qLoraRank, r <= 0 { throw ESFTError("\(source): q_lora_rank must be null or positive, got \(r)") }
        let kvLoraRank = try positiveInt(f, "kv_lora_rank")
        let qkNopeHeadDim = try positiveInt(f, "qk_nope_head_dim")
        let qkRopeHeadDim = try positiveInt(f, "qk_rope_head_dim")
        guard qkRopeHeadDim % 2 == 0 else {
            throw ESFTError("\(source): qk_rope_head_dim must be even (RoPE rotates pairs), got \(qkRopeHeadDim)")
        }
        attention = .mla(MLAShape(heads: heads, qLoraRank: qLoraRank, kvLoraRank: kvLoraRank, qkNopeHeadDim: qkNopeHeadDim,
                                  qkRopeHeadDim: qkRopeHeadDim, vHeadDim: try positiveInt(f, "v_head_dim"),
                                  bias: try f.optionalField("attention_bias")?.bool() ?? false,
                                  ropeInterleaved: v3 ? try f.optionalField("rope_interleave")?.bool() ?? true : true))

        nRoutedExperts = try f.optionalField("n_routed_experts")?.int() ?? 0
        let nSharedExperts = try f.optionalField("n_shared_experts")?.int() ?? 0
        moeIntermediateSize = try f.optionalField("moe_intermediate_size")?.int() ?? 0
        expertsPerToken = try f.optionalField("num_experts_per_tok")?.int() ?? 0
        let firstKDenseReplace = try f.optionalField("first_k_dense_replace")?.int() ?? 0
        let moeLayerFreq = try f.optionalField("moe_layer_freq")?.int() ?? 1
        let methods: [TopKMethod] = v3 ? [.noauxTC] : [.greedy, .groupLimitedGreedy]
        let method = try f.optionalField("topk_method")?.string() ?? methods[0].rawValue
        guard let topkMethod = TopKMethod(rawValue: method), methods.contains(topkMethod) else {
            throw ESFTError("\(source): topk_method '\(method)' is not supported (supported: \(methods.map(\.rawValue).joined(separator: ", ")))")
        }
        let nGroup = try f.optionalField("n_group")?.int() ?? 1
        let topkGroup = try f.optionalField("topk_group")?.int() ?? 1
        router = RouterRule(method: topkMethod, groups: nGroup, keepGroups: topkGroup,
                            normalize: try f.optionalField("norm_topk_prob")?.bool() ?? false,
                            scale: Float(try f.optionalField("routed_scaling_factor")?.double() ?? 1))
        if v3 { router.scoring = .sigmoid; router.selectionBias = true }
        sharedExperts = nSharedExperts > 0 ? .plain(count: nSharedExperts, width: moeIntermediateSize) : .none
        // transformers' DeepseekV3 ignores moe_layer_freq (every layer from first_k_dense_replace on is MoE).
        moeLayerRule = .deepseek(firstDense: firstKDenseReplace, every: v3 ? 1 : moeLayerFreq)
        rmsNormEps = Float(try f.optionalField("rms_norm_eps")?.double() ?? 1e-6)
        tieWordEmbeddings = try f.optionalField("tie_word_embeddings")?.bool() ?? false
        maxPositionEmbeddings = try f.optionalField("max_position_embeddings")?.int() ?? 2048
        initializerRange = try f.optionalField("initializer_range")?.double() ?? 0.02
        balanceLoss = v3 ? .none : .sequence
        paddingIdx = nil

        if nRoutedExperts < 0 || nSharedExperts < 0 || firstKDenseReplace < 0 {
            throw ESFTError("\(source): n_routed_experts, n_shared_experts and first_k_dense_replace must be ≥ 0")
        }
        if nRoutedExperts > 0 {
            guard moeIntermediateSize > 0 else { throw ESFTError("\(source): moe_intermediate_size must be positive") }
            guard expertsPerToken >= 1 && expertsPerToken <= nRoutedExperts else {
                throw ESFTError("\(source): num_experts_per_tok \(expertsPerToken) must be in 1...n_routed_experts (\(nRoutedExperts))")
            }
            guard moeLayerFreq >= 1 else { throw ESFTError("\(source): moe_layer_freq must be ≥ 1, got \(moeLayerFreq)") }
            if topkMethod == .noauxTC {
                guard nGroup >= 1, nRoutedExperts % nGroup == 0, nRoutedExperts / nGroup >= 2 else {
                    throw ESFTError("\(source): n_group \(nGroup) must divide n_routed_experts \(nRoutedExperts) into groups of at least 2 (a group scores by its two best experts)")
                }
                guard topkGroup >= 1, topkGroup <= nGroup else {
                    throw ESFTError("\(source): topk_group \(topkGroup) must be in 1...n_group (\(nGroup))")
                }
            }
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

import ESFTKernels

extension ModelConfig {
    /// A config.json of one of the GQA families, read by its rules (model_type already checked). Errors name
    /// the file and the field; what the engine does not implement (sliding windows, clipping, router noise)
    /// is refused by name rather than silently computed differently.
    init(gqa r: GQAFamilyRules, _ f: JSONReader) throws {
        let source = f.source
        family = r.family
        (vocabSize, hiddenSize, intermediateSize, numLayers) = try ModelConfig.commonFields(f, family: r.family.rawValue)

        let heads = try positiveInt(f, "num_attention_heads")
        let kvHeads = try f.optionalField("num_key_value_heads")?.int() ?? heads
        guard kvHeads >= 1, heads % kvHeads == 0 else {
            throw ESFTError(ErrorText.field(source, "num_key_value_heads", "\(kvHeads) must be ≥ 1 and divide num_attention_heads \(heads)"))
        }
        // head_dim: Qwen3-MoE and Mixtral read it (null or absent: hidden_size / heads); OLMoE's full-width
        // q/k norms are sized hidden_size, so it needs hidden_size / heads.
        let givenHeadDim = try f.optionalField("head_dim")?.int()
        let headDim = givenHeadDim ?? hiddenSize / heads
        guard headDim > 0, headDim % 2 == 0 else {
            throw ESFTError(ErrorText.field(source, "head_dim", "\(headDim) must be positive and even (RoPE rotates halves)"))
        }
        if givenHeadDim == nil, hiddenSize % heads != 0 {
            throw ESFTError(ErrorText.field(source, "num_attention_heads", "\(heads) must divide hidden_size \(hiddenSize) when head_dim is not given"))
        }
        if r.qkNorm == .fullWidth && headDim * heads != hiddenSize {
            throw ESFTError(ErrorText.field(source, "head_dim", "\(headDim) × \(heads) heads must equal hidden_size \(hiddenSize) (\(r.family.rawValue)'s q/k norms are sized hidden_size)"))
        }
        let qkvBias: Bool, outputBias: Bool
        switch r.biases {
        case .qkvFromQKVBias: qkvBias = try f.optionalField("qkv_bias")?.bool() ?? true; outputBias = false
        case .allFromAttentionBias: qkvBias = try f.optionalField("attention_bias")?.bool() ?? false; outputBias = qkvBias
        case .none: qkvBias = false; outputBias = false
        }
        attention = .gqa(GQAShape(heads: heads, kvHeads: kvHeads, headDim: headDim, qkvBias: qkvBias, outputBias: outputBias, qkNorm: r.qkNorm))

        var experts = 0
        for key in r.expertCountKeys { if let e = try f.optionalField(key)?.int() { experts = e; break } }
        nRoutedExperts = experts
        expertsPerToken = try f.optionalField("num_experts_per_tok")?.int() ?? 0
        moeIntermediateSize = try f.optionalField(r.expertWidthKey)?.int() ?? 0
        if experts < 0 { throw ESFTError(ErrorText.field(source, r.expertCountKeys[0], "must be ≥ 0, got \(experts)")) }
        if experts > 0 {
            guard moeIntermediateSize > 0 else { throw ESFTError(ErrorText.field(source, r.expertWidthKey, "must be positive")) }
            guard expertsPerToken >= 1 && expertsPerToken <= experts else {
                throw ESFTError(ErrorText.field(source, "num_experts_per_tok", "\(expertsPerToken) must be in 1...\(experts) (the routed experts)"))
            }
        }
        router = RouterRule(method: .greedy, normalize: r.alwaysNormalize ? true : try f.optionalField("norm_topk_prob")?.bool() ?? false)
        if r.qwenLayerRule {
            let step = try f.optionalField("decoder_sparse_step")?.int() ?? 1
            guard step >= 1 else { throw ESFTError(ErrorText.field(source, "decoder_sparse_step", "must be ≥ 1, got \(step)")) }
            let mlpOnly = try f.optionalField("mlp_only_layers")?.items().map { try $0.int() } ?? []
            if let bad = mlpOnly.first(where: { $0 < 0 }) { throw ESFTError(ErrorText.field(source, "mlp_only_layers", "holds \(bad), not a layer index")) }
            moeLayerRule = .qwen(mlpOnly: mlpOnly.sorted(), step: step)
        } else {
            moeLayerRule = .all
        }
        if r.gatedSharedExpert {
            let width = try f.optionalField("shared_expert_intermediate_size")?.int() ?? 0
            if width < 0 { throw ESFTError(ErrorText.field(source, "shared_expert_intermediate_size", "must be ≥ 0, got \(width)")) }
            sharedExperts = width > 0 && experts > 0 ? .gated(width: width) : .none
        } else {
            sharedExperts = .none
        }
        rmsNormEps = Float(try f.optionalField("rms_norm_eps")?.double() ?? r.defaultNormEps)
        tieWordEmbeddings = try f.optionalField("tie_word_embeddings")?.bool() ?? false
        maxPositionEmbeddings = try f.optionalField("max_position_embeddings")?.int() ?? 4096
        initializerRange = try f.optionalField("initializer_range")?.double() ?? 0.02
        balanceLoss = .switchPooled(coefficient: try f.optionalField("router_aux_loss_coef")?.double() ?? 0.001)
        // Absent: the family's default; null: none.
        paddingIdx = try f.keys().contains("pad_token_id") ? try f.optionalField("pad_token_id")?.int() : r.defaultPadTokenId
        if let p = paddingIdx, p < 0 || p >= vocabSize {
            throw ESFTError(ErrorText.field(source, "pad_token_id", "\(p) is not a token id below vocab_size \(vocabSize)"))
        }
        (ropeTheta, yarn) = try ModelConfig.parseRope(f, maxPositionEmbeddings: maxPositionEmbeddings, source: source,
                                                      defaultTheta: r.defaultRopeTheta)
        try ModelConfigChecks.check(self, f)
    }

    /// The fingerprint fields of a GQA family's config (every field above that changes the math).
    static func gqaFingerprintFields(_ c: ModelConfig) -> [(String, String)] {
        guard case .gqa(let a) = c.attention else { return [] }
        var fields: [(String, String)] = [
            ("model_type", c.family.rawValue), ("vocab_size", "\(c.vocabSize)"), ("hidden_size", "\(c.hiddenSize)"),
            ("intermediate_size", "\(c.intermediateSize)"), ("expert_intermediate_size", "\(c.moeIntermediateSize)"),
            ("num_hidden_layers", "\(c.numLayers)"), ("num_attention_heads", "\(a.heads)"), ("num_key_value_heads", "\(a.kvHeads)"),
            ("head_dim", "\(a.headDim)"), ("qk_norm", a.qkNorm.rawValue), ("qkv_bias", "\(a.qkvBias)"), ("o_bias", "\(a.outputBias)"),
            ("num_experts", "\(c.nRoutedExperts)"), ("num_experts_per_tok", "\(c.expertsPerToken)"),
            ("norm_topk_prob", "\(c.router.normalize)"), ("shared_expert_intermediate_size", "\(c.sharedExperts.width)"),
        ]
        switch c.moeLayerRule {
        case .qwen(let mlpOnly, let step):
            fields += [("mlp_only_layers", mlpOnly.map(String.init).joined(separator: ",")), ("decoder_sparse_step", "\(step)")]
        default: fields.append(("moe_layers", "all"))
        }
        fields += [("rms_norm_eps", "\(c.rmsNormEps)"), ("rope_theta", "\(c.ropeTheta)"), ("tie_word_embeddings", "\(c.tieWordEmbeddings)"),
                   ("max_position_embeddings", "\(c.maxPositionEmbeddings)"), ("pad_token_id", c.paddingIdx.map(String.init) ?? "null")]
        if let y = c.yarn {
            fields += [("yarn.factor", "\(y.factor)"), ("yarn.original_max_position_embeddings", "\(y.originalMaxPositionEmbeddings)"),
                       ("yarn.beta_fast", "\(y.betaFast)"), ("yarn.beta_slow", "\(y.betaSlow)"),
                       ("yarn.attention_factor", y.attentionFactor.map { "\($0)" } ?? "null"), ("yarn.truncate", "\(y.truncate)")]
        }
        return fields
    }
}

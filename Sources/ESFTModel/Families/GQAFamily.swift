import ESFTKernels

/// What sets the grouped-query-attention MoE families apart (Qwen3-MoE, Qwen2-MoE, OLMoE, Mixtral): the
/// config keys they use, their defaults, attention's biases and q/k norms, the router, which layers are MoE,
/// the shared expert and what their tensors are called. Each family's file holds its value of this; the
/// reading, naming and fingerprinting below are shared.
struct GQAFamilyRules: Sendable {
    enum Biases: Sendable {
        /// q/k/v biases when `qkv_bias` (default true), never on o (Qwen2-MoE).
        case qkvFromQKVBias
        /// q/k/v and o biases when `attention_bias` (default false) (Qwen3-MoE, OLMoE).
        case allFromAttentionBias
        case none
    }
    let family: ModelFamily
    /// The routed-expert count's key(s), first found wins.
    let expertCountKeys: [String]
    /// The routed experts' width: `moe_intermediate_size` (Qwen) or `intermediate_size` (OLMoE, Mixtral).
    let expertWidthKey: String
    let defaultNormEps: Double
    let defaultRopeTheta: Double
    let qkNorm: GQAShape.QKNorm
    let biases: Biases
    /// Mixtral renormalises the chosen probabilities always; the others when `norm_topk_prob`.
    let alwaysNormalize: Bool
    /// Qwen's `mlp_only_layers` / `decoder_sparse_step`, else every layer is MoE.
    let qwenLayerRule: Bool
    /// Qwen2-MoE's sigmoid-gated shared expert of `shared_expert_intermediate_size`.
    let gatedSharedExpert: Bool
    /// The MoE block's module (`mlp`, or Mixtral's `block_sparse_moe`) and a routed expert's projections' names.
    let moeModule: String
    let expertProjectionNames: [ParameterID.Projection: String]
    /// The config's pad_token_id when absent (OLMoE's is 1).
    let defaultPadTokenId: Int?

    static let gatedMLPNames: [ParameterID.Projection: String] = [.gate: "gate_proj", .up: "up_proj", .down: "down_proj"]
}

extension GQAFamilyRules {
    // MARK: Names

    func tensorName(of id: ParameterID) -> String {
        TensorNameParts.name(of: id) { l in
            switch id.kind {
            case .routerBias: return l + moeModule + ".gate.e_score_correction_bias"  // not a GQA family's tensor: never in its specs
            case .sharedExperts(let p): return l + "mlp.shared_expert." + p.rawValue + ".weight"
            case .sharedExpertGate: return l + "mlp.shared_expert_gate.weight"
            case .routedExpert(let p): return l + moeModule + ".experts.\(id.expert ?? -1)." + (expertProjectionNames[p] ?? p.rawValue) + ".weight"
            default: return l + moeModule + ".gate.weight"  // the router (the other kinds are spelled by TensorNameParts)
            }
        }
    }

    /// The names of one layer's tensors after `model.layers.L.`, except the routed experts'.
    private var layerNames: [String: ParameterID.Kind] {
        var names: [String: ParameterID.Kind] = [
            "input_layernorm.weight": .inputNorm, "post_attention_layernorm.weight": .postAttentionNorm,
            moeModule + ".gate.weight": .router,
        ]
        for t: ParameterID.AttentionTensor in [.qProj, .qBias, .kProj, .kBias, .vProj, .vBias, .oProj, .oBias, .qNorm, .kNorm] {
            names["self_attn." + t.rawValue] = .attention(t)
        }
        for p in ParameterID.Projection.allCases {
            names["mlp." + p.rawValue + ".weight"] = .denseMLP(p)
            if gatedSharedExpert { names["mlp.shared_expert." + p.rawValue + ".weight"] = .sharedExperts(p) }
        }
        if gatedSharedExpert { names["mlp.shared_expert_gate.weight"] = .sharedExpertGate }
        return names
    }

    func parameterID(named name: String) -> ParameterID? {
        guard let split = TensorNameParts(name) else { return nil }
        guard case .layer(let layer, let rest, let expert) = split else { if case .global(let id) = split { return id }; return nil }
        if let kind = layerNames[rest] {
            switch kind {
            case .inputNorm: return .inputNorm(layer: layer)
            case .postAttentionNorm: return .postAttentionNorm(layer: layer)
            case .router: return .router(layer: layer)
            case .attention(let t): return .attention(t, layer: layer)
            case .denseMLP(let p): return .denseMLP(p, layer: layer)
            case .sharedExperts(let p): return .sharedExperts(p, layer: layer)
            case .sharedExpertGate: return .sharedExpertGate(layer: layer)
            default: return nil
            }
        }
        // <moe>.experts.E.<projection>.weight
        guard expert.count == 5, expert.first.map(String.init) == moeModule, expert[expert.startIndex + 1] == "experts",
              expert.last == "weight", let e = tensorIndex(expert[expert.startIndex + 2]),
              let p = expertProjectionNames.first(where: { $0.value == expert[expert.startIndex + 3] })?.key else { return nil }
        return .routedExpert(p, layer: layer, expert: e)
    }

    /// transformers 5 holds every family's experts fused under `mlp.experts` in memory (Mixtral's block too).
    func fusedExpertName(of id: ParameterID) -> String? {
        guard case .routedExpert(let p) = id.kind, let layer = id.layer else { return nil }
        return "model.layers.\(layer).mlp.experts." + (p == .down ? "down_proj" : "gate_up_proj")
    }
}

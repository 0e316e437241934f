/// Which tensor of a model a parameter is: the one identity the method, the store, the trainer, the CLI and
/// checkpoints exchange, as (layer, kind, expert). What a tensor is called on disk is its family's business
/// (`ModelFamily.tensorName(of:)` and `parameterID(named:)`, in Families/).
public struct ParameterID: Hashable, Sendable, CustomStringConvertible {
    /// A projection of a gated MLP: a dense MLP, the shared experts, or one routed expert.
    public enum Projection: String, CaseIterable, Sendable { case gate = "gate_proj", up = "up_proj", down = "down_proj" }

    /// A tensor of a layer's self-attention (MLA's or GQA's), spelled as every supported family spells it
    /// under `self_attn.`.
    public enum AttentionTensor: String, CaseIterable, Sendable {
        case qProj = "q_proj.weight", qBias = "q_proj.bias"
        case qAProj = "q_a_proj.weight", qABias = "q_a_proj.bias", qANorm = "q_a_layernorm.weight", qBProj = "q_b_proj.weight"
        case kvAProj = "kv_a_proj_with_mqa.weight", kvABias = "kv_a_proj_with_mqa.bias"
        case kvANorm = "kv_a_layernorm.weight", kvBProj = "kv_b_proj.weight"
        case kProj = "k_proj.weight", kBias = "k_proj.bias", vProj = "v_proj.weight", vBias = "v_proj.bias"
        case qNorm = "q_norm.weight", kNorm = "k_norm.weight"
        case oProj = "o_proj.weight", oBias = "o_proj.bias"
    }

    public enum Kind: Hashable, Sendable {
        case embedTokens, finalNorm, lmHead
        case attention(AttentionTensor)
        case inputNorm, postAttentionNorm
        /// The MoE router's gate (`mlp.gate.weight`), not an expert.
        case router
        /// DeepSeek-V3's selection bias of the router (`mlp.gate.e_score_correction_bias`, [E]): a buffer that
        /// changes which experts are chosen, never trained (`isBuffer`).
        case routerBias
        case denseMLP(Projection)
        case sharedExperts(Projection)
        /// Qwen2-MoE's scalar gate of its shared expert (`mlp.shared_expert_gate.weight`, [1, D]).
        case sharedExpertGate
        case routedExpert(Projection)
    }

    /// The decoder layer (nil for the embedding, the final norm and lm_head).
    public let layer: Int?
    public let kind: Kind
    /// The routed expert's global id (nil for every other kind).
    public let expert: Int?

    private init(layer: Int?, kind: Kind, expert: Int?) { self.layer = layer; self.kind = kind; self.expert = expert }

    public static let embedTokens = ParameterID(layer: nil, kind: .embedTokens, expert: nil)
    public static let finalNorm = ParameterID(layer: nil, kind: .finalNorm, expert: nil)
    public static let lmHead = ParameterID(layer: nil, kind: .lmHead, expert: nil)
    public static func attention(_ tensor: AttentionTensor, layer: Int) -> ParameterID { .init(layer: layer, kind: .attention(tensor), expert: nil) }
    public static func inputNorm(layer: Int) -> ParameterID { .init(layer: layer, kind: .inputNorm, expert: nil) }
    public static func postAttentionNorm(layer: Int) -> ParameterID { .init(layer: layer, kind: .postAttentionNorm, expert: nil) }
    public static func router(layer: Int) -> ParameterID { .init(layer: layer, kind: .router, expert: nil) }
    public static func routerBias(layer: Int) -> ParameterID { .init(layer: layer, kind: .routerBias, expert: nil) }
    public static func denseMLP(_ p: Projection, layer: Int) -> ParameterID { .init(layer: layer, kind: .denseMLP(p), expert: nil) }
    public static func sharedExperts(_ p: Projection, layer: Int) -> ParameterID { .init(layer: layer, kind: .sharedExperts(p), expert: nil) }
    public static func sharedExpertGate(layer: Int) -> ParameterID { .init(layer: layer, kind: .sharedExpertGate, expert: nil) }
    public static func routedExpert(_ p: Projection, layer: Int, expert: Int) -> ParameterID {
        .init(layer: layer, kind: .routedExpert(p), expert: expert)
    }

    /// The routed expert (layer, global id) this tensor belongs to, if it is one.
    public var routedExpert: (layer: Int, expert: Int)? {
        guard case .routedExpert = kind, let layer, let expert else { return nil }
        return (layer, expert)
    }
    /// A buffer of the model (DeepSeek-V3's router selection bias): read like a weight, never trained, no gradient.
    public var isBuffer: Bool { if case .routerBias = kind { return true } else { return false } }

    /// The shared experts' tensors, Qwen2-MoE's gate of its shared expert included (it only scales that expert).
    public var isSharedExpert: Bool {
        switch kind { case .sharedExperts, .sharedExpertGate: return true; default: return false }
    }

    /// A family-neutral description for messages that have no model at hand ("layer 3 router").
    public var description: String {
        let at = layer.map { "layer \($0) " } ?? ""
        switch kind {
        case .embedTokens: return "token embedding"
        case .finalNorm: return "final norm"
        case .lmHead: return "output head"
        case .attention(let t): return at + "attention \(t.rawValue)"
        case .inputNorm: return at + "input norm"
        case .postAttentionNorm: return at + "post-attention norm"
        case .router: return at + "router"
        case .routerBias: return at + "router selection bias"
        case .denseMLP(let p): return at + "dense MLP \(p.rawValue)"
        case .sharedExperts(let p): return at + "shared experts \(p.rawValue)"
        case .sharedExpertGate: return at + "shared expert gate"
        case .routedExpert(let p): return at + "expert \(expert ?? -1) \(p.rawValue)"
        }
    }
}

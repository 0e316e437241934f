/// Which tensor of a DeepseekV2ForCausalLM a parameter is: the one identity the method, the store, the
/// trainer, the CLI and checkpoints exchange. Hugging Face names are made and parsed here and nowhere
/// else (`hfName`, `init?(hfName:)`); routed experts use the per-expert names of DeepSeek's released
/// checkpoints (`model.layers.L.mlp.experts.E.up_proj.weight`).
public struct ParameterID: Hashable, Sendable, CustomStringConvertible {
    /// A projection of a gated MLP: a dense MLP, the shared experts, or one routed expert.
    public enum Projection: String, CaseIterable, Sendable { case gate = "gate_proj", up = "up_proj", down = "down_proj" }

    /// A tensor of a layer's self-attention (MLA), spelled as HF spells it under `self_attn.`.
    public enum AttentionTensor: String, CaseIterable, Sendable {
        case qProj = "q_proj.weight"
        case qAProj = "q_a_proj.weight", qABias = "q_a_proj.bias", qANorm = "q_a_layernorm.weight", qBProj = "q_b_proj.weight"
        case kvAProj = "kv_a_proj_with_mqa.weight", kvABias = "kv_a_proj_with_mqa.bias"
        case kvANorm = "kv_a_layernorm.weight", kvBProj = "kv_b_proj.weight"
        case oProj = "o_proj.weight", oBias = "o_proj.bias"
    }

    public enum Kind: Hashable, Sendable {
        case embedTokens, finalNorm, lmHead
        case attention(AttentionTensor)
        case inputNorm, postAttentionNorm
        /// The MoE router's gate (`mlp.gate.weight`), not an expert.
        case router
        case denseMLP(Projection)
        case sharedExperts(Projection)
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
    public static func denseMLP(_ p: Projection, layer: Int) -> ParameterID { .init(layer: layer, kind: .denseMLP(p), expert: nil) }
    public static func sharedExperts(_ p: Projection, layer: Int) -> ParameterID { .init(layer: layer, kind: .sharedExperts(p), expert: nil) }
    public static func routedExpert(_ p: Projection, layer: Int, expert: Int) -> ParameterID {
        .init(layer: layer, kind: .routedExpert(p), expert: expert)
    }

    /// The routed expert (layer, global id) this tensor belongs to, if it is one.
    public var routedExpert: (layer: Int, expert: Int)? {
        guard case .routedExpert = kind, let layer, let expert else { return nil }
        return (layer, expert)
    }
    public var isSharedExpert: Bool { if case .sharedExperts = kind { return true } else { return false } }

    /// The Hugging Face tensor name.
    public var hfName: String {
        let l = "model.layers.\(layer ?? -1)."
        switch kind {
        case .embedTokens: return "model.embed_tokens.weight"
        case .finalNorm: return "model.norm.weight"
        case .lmHead: return "lm_head.weight"
        case .attention(let t): return l + "self_attn." + t.rawValue
        case .inputNorm: return l + "input_layernorm.weight"
        case .postAttentionNorm: return l + "post_attention_layernorm.weight"
        case .router: return l + "mlp.gate.weight"
        case .denseMLP(let p): return l + "mlp." + p.rawValue + ".weight"
        case .sharedExperts(let p): return l + "mlp.shared_experts." + p.rawValue + ".weight"
        case .routedExpert(let p): return l + "mlp.experts.\(expert ?? -1)." + p.rawValue + ".weight"
        }
    }

    public var description: String { hfName }

    /// For a routed expert's projection, the fused 3-D tensor of recent transformers that holds it:
    /// `model.layers.L.mlp.experts.gate_up_proj` [E, 2I, D] (gate rows, then up) or `…experts.down_proj` [E, D, I].
    public var hfFusedExpertName: String? {
        guard case .routedExpert(let p) = kind, let layer else { return nil }
        return "model.layers.\(layer).mlp.experts." + (p == .down ? "down_proj" : "gate_up_proj")
    }

    /// Parses a Hugging Face tensor name; nil for a name that is not a DeepseekV2ForCausalLM parameter
    /// (fused 3-D expert tensors, rotary buffers, another architecture's tensors).
    public init?(hfName name: String) {
        switch name {
        case "model.embed_tokens.weight": self = .embedTokens; return
        case "model.norm.weight": self = .finalNorm; return
        case "lm_head.weight": self = .lmHead; return
        default: break
        }
        let parts = name.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count >= 4, parts[0] == "model", parts[1] == "layers", let layer = Self.index(parts[2]) else { return nil }
        let rest = parts[3...].joined(separator: ".")
        if rest == "input_layernorm.weight" { self = .inputNorm(layer: layer); return }
        if rest == "post_attention_layernorm.weight" { self = .postAttentionNorm(layer: layer); return }
        if rest == "mlp.gate.weight" { self = .router(layer: layer); return }
        if rest.hasPrefix("self_attn."), let t = AttentionTensor(rawValue: String(rest.dropFirst("self_attn.".count))) {
            self = .attention(t, layer: layer); return
        }
        // mlp.P.weight, mlp.shared_experts.P.weight, mlp.experts.E.P.weight
        let mlp = parts[3...]
        guard mlp.first == "mlp", mlp.last == "weight", let p = Projection(rawValue: String(mlp[mlp.endIndex - 2])) else { return nil }
        switch mlp.count {
        case 3: self = .denseMLP(p, layer: layer)
        case 4 where mlp[mlp.startIndex + 1] == "shared_experts": self = .sharedExperts(p, layer: layer)
        case 5 where mlp[mlp.startIndex + 1] == "experts":
            guard let e = Self.index(mlp[mlp.startIndex + 2]) else { return nil }
            self = .routedExpert(p, layer: layer, expert: e)
        default: return nil
        }
    }

    /// A decimal index as HF writes it: digits only, no sign, no leading zeros ("07" is not layer 7).
    private static func index(_ s: Substring) -> Int? {
        guard !s.isEmpty, s.allSatisfy({ $0.isASCII && $0.isNumber }), s == "0" || s.first != "0" else { return nil }
        return Int(s)
    }
}

extension ParameterID: Comparable {
    /// Hugging Face name order (what sorted safetensors files and checkpoints list).
    public static func < (a: ParameterID, b: ParameterID) -> Bool { a.hfName < b.hfName }
}

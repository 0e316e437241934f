/// How an MoE layer's router turns the gate's probabilities into each token's experts and their weights.
public struct RouterRule: Equatable, Sendable {
    /// How the gate's logits become scores: a softmax over the experts, or each expert's sigmoid (DeepSeek-V3).
    public enum Scoring: String, Equatable, Sendable { case softmax, sigmoid }
    public var scoring: Scoring = .softmax
    /// Greedy top-k, DeepSeek-V2's group-limited top-k (the experts of the `keepGroups` of `groups` equal
    /// groups whose best probability is highest), or DeepSeek-V3's (groups by their two best biased scores).
    public var method: TopKMethod
    /// n_group and topk_group as the config gives them (used only by the group-limited method).
    public var groups: Int
    public var keepGroups: Int
    /// Divide the chosen probabilities by their sum (norm_topk_prob; Mixtral always: a softmax over the K logits).
    public var normalize: Bool
    /// Multiplies the (renormalised) weights (routed_scaling_factor; 1 where a family has none).
    public var scale: Float
    /// DeepSeek-V3: the choice is made on score + `e_score_correction_bias` (a buffer); the weights stay unbiased.
    public var selectionBias = false

    public init(method: TopKMethod, groups: Int = 1, keepGroups: Int = 1, normalize: Bool, scale: Float = 1) {
        self.method = method; self.groups = groups; self.keepGroups = keepGroups; self.normalize = normalize; self.scale = scale
    }
}

/// The always-on experts beside the routed ones.
public enum SharedExperts: Equatable, Sendable {
    case none
    /// DeepSeek: `count` experts of the routed width, run as one MLP of `count × width` (`mlp.shared_experts`).
    case plain(count: Int, width: Int)
    /// Qwen2-MoE: one MLP of `width` whose output is scaled by sigmoid(shared_expert_gate · x) per token.
    case gated(width: Int)

    /// The shared MLP's width (0: none).
    public var width: Int {
        switch self {
        case .none: return 0
        case .plain(let count, let width): return count * width
        case .gated(let width): return width
        }
    }
    /// DeepSeek's n_shared_experts (1 for a gated one, 0 for none).
    public var count: Int {
        switch self { case .none: return 0; case .plain(let count, _): return count; case .gated: return 1 }
    }
}

/// Which decoder layers are MoE layers (the others run a dense MLP of intermediate_size).
public enum MoELayerRule: Equatable, Sendable {
    /// DeepSeek: l ≥ first_k_dense_replace and l % moe_layer_freq == 0.
    case deepseek(firstDense: Int, every: Int)
    /// Qwen: l not in mlp_only_layers and (l + 1) % decoder_sparse_step == 0.
    case qwen(mlpOnly: [Int], step: Int)
    /// OLMoE, Mixtral: every layer.
    case all

    public func isMoE(_ l: Int) -> Bool {
        switch self {
        case .deepseek(let first, let every): return l >= first && l % every == 0
        case .qwen(let mlpOnly, let step): return !mlpOnly.contains(l) && (l + 1) % step == 0
        case .all: return true
        }
    }

    /// How many of `layers` layers are MoE, without listing them (a config may claim billions of layers).
    public func count(layers: Int) -> Int {
        switch self {
        case .deepseek(let firstDense, let every):
            guard every >= 1, firstDense < layers else { return 0 }
            let first = (firstDense + every - 1) / every * every
            return first >= layers ? 0 : (layers - 1 - first) / every + 1
        case .qwen(let mlpOnly, let step):
            guard step >= 1 else { return 0 }
            return layers / step - Set(mlpOnly).filter { $0 < layers && ($0 + 1) % step == 0 }.count
        case .all: return layers
        }
    }
}

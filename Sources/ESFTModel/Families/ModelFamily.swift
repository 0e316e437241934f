import ESFTKernels

/// The architecture family a config.json names (`model_type`), and everything that differs between families
/// outside the engine's math: how a config is read and checked, what the tensors are called on disk, and
/// which config fields a model fingerprint covers. Each family's rules live in one file of this folder
/// (`DeepseekV2.swift`, …); the rest of esft asks the family of a config, never spells a family itself.
public enum ModelFamily: String, CaseIterable, Sendable {
    case deepseekV2 = "deepseek_v2"
    case deepseekV3 = "deepseek_v3"
    case qwen3MoE = "qwen3_moe"
    case qwen2MoE = "qwen2_moe"
    case olmoe
    case mixtral

    /// The rules of a GQA family (nil for the DeepSeek families, whose rules are their own files').
    var gqaRules: GQAFamilyRules? {
        switch self {
        case .deepseekV2, .deepseekV3: return nil
        case .qwen3MoE: return Qwen3MoEFamily.rules
        case .qwen2MoE: return Qwen2MoEFamily.rules
        case .olmoe: return OLMoEFamily.rules
        case .mixtral: return MixtralFamily.rules
        }
    }

    /// Other model_type values that name one of these architectures: Kimi-K2 ships `kimi_k2` with
    /// `architectures: [DeepseekV3ForCausalLM]` and DeepSeek-V3's config fields.
    static let aliases: [String: ModelFamily] = ["kimi_k2": .deepseekV3]

    /// The family a config.json's model_type names (an alias included); nil when unsupported.
    public init?(modelType: String) {
        guard let family = ModelFamily(rawValue: modelType) ?? Self.aliases[modelType] else { return nil }
        self = family
    }

    /// The model_type values esft reads, for messages.
    public static var supported: String {
        (allCases.map(\.rawValue) + aliases.map { "\($0.key) (as \($0.value.rawValue))" }.sorted()).joined(separator: ", ")
    }

    /// Reads a config.json of this family (every field that changes the math), checking each value.
    func parseConfig(_ f: JSONReader) throws -> ModelConfig {
        switch self {
        case .deepseekV2: return try DeepseekV2Family.parseConfig(f)
        case .deepseekV3: return try DeepseekV3Family.parseConfig(f)
        case .qwen3MoE: return try Qwen3MoEFamily.parseConfig(f)
        case .qwen2MoE: return try Qwen2MoEFamily.parseConfig(f)
        case .olmoe: return try OLMoEFamily.parseConfig(f)
        case .mixtral: return try MixtralFamily.parseConfig(f)
        }
    }

    /// The tensor's name in this family's checkpoints (the per-expert layout hub checkpoints use).
    public func tensorName(of id: ParameterID) -> String {
        switch self {
        case .deepseekV2, .deepseekV3: return DeepseekV2Family.tensorName(of: id)
        // `!` here and below: every family but the DeepSeek ones is a GQA family with rules.
        default: return gqaRules!.tensorName(of: id)
        }
    }

    /// The identity of a tensor name of this family; nil for a name that is not one of its parameters
    /// (fused 3-D expert tensors, rotary buffers, another family's tensors).
    public func parameterID(named name: String) -> ParameterID? {
        switch self {
        case .deepseekV2: return DeepseekV2Family.parameterID(named: name)
        case .deepseekV3: return DeepseekV3Family.parameterID(named: name)
        default: return gqaRules!.parameterID(named: name)
        }
    }

    /// For a routed expert's projection, the fused 3-D tensor that recent transformers versions hold it in
    /// (`…experts.gate_up_proj` [E, 2I, D], gate rows then up, or `…experts.down_proj` [E, D, I]); nil otherwise.
    public func fusedExpertName(of id: ParameterID) -> String? {
        switch self {
        case .deepseekV2, .deepseekV3: return DeepseekV2Family.fusedExpertName(of: id)
        default: return gqaRules!.fusedExpertName(of: id)
        }
    }

    /// Tensors kept in float32 even in a bf16 model, as transformers keeps them (`_keep_in_fp32_modules_strict`):
    /// DeepSeek-V3's router weight and its selection bias, whose rounding would change which experts are chosen.
    public func keepsFloat32(_ id: ParameterID) -> Bool {
        guard self == .deepseekV3 else { return false }
        switch id.kind {
        case .router, .routerBias: return true
        default: return false
        }
    }

    /// The config fields a model fingerprint covers, in a fixed order, spelled stably.
    public func fingerprintFields(_ c: ModelConfig) -> [(String, String)] {
        switch self {
        case .deepseekV2: return DeepseekV2Family.fingerprintFields(c)
        case .deepseekV3: return DeepseekV3Family.fingerprintFields(c)
        default: return ModelConfig.gqaFingerprintFields(c)
        }
    }
}

/// A tensor name split the way every family lays names out: the model-wide tensors, or
/// `model.layers.L.<rest>` (rest also as its dot-separated parts).
enum TensorNameParts {
    case global(ParameterID)
    case layer(Int, rest: String, parts: ArraySlice<Substring>)

    init?(_ name: String) {
        switch name {
        case "model.embed_tokens.weight": self = .global(.embedTokens); return
        case "model.norm.weight": self = .global(.finalNorm); return
        case "lm_head.weight": self = .global(.lmHead); return
        default: break
        }
        let parts = name.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count >= 4, parts[0] == "model", parts[1] == "layers", let layer = tensorIndex(parts[2]) else { return nil }
        self = .layer(layer, rest: parts[3...].joined(separator: "."), parts: parts[3...])
    }
}

extension TensorNameParts {
    /// `id`'s name in a family's checkpoints: what every family spells alike (model-wide tensors, attention,
    /// norms, dense MLPs) here, and the MoE block's tensors by `moe`, given the layer's `model.layers.L.` prefix.
    static func name(of id: ParameterID, moe: (_ layerPrefix: String) -> String) -> String {
        let l = "model.layers.\(id.layer ?? -1)."
        switch id.kind {
        case .embedTokens: return "model.embed_tokens.weight"
        case .finalNorm: return "model.norm.weight"
        case .lmHead: return "lm_head.weight"
        case .attention(let t): return l + "self_attn." + t.rawValue
        case .inputNorm: return l + "input_layernorm.weight"
        case .postAttentionNorm: return l + "post_attention_layernorm.weight"
        case .denseMLP(let p): return l + "mlp." + p.rawValue + ".weight"
        case .router, .routerBias, .sharedExperts, .sharedExpertGate, .routedExpert: return moe(l)
        }
    }
}

/// A decimal index as checkpoints write it: digits only, no sign, no leading zeros ("07" is not layer 7).
func tensorIndex(_ s: Substring) -> Int? {
    guard !s.isEmpty, s.allSatisfy({ $0.isASCII && $0.isNumber }), s == "0" || s.first != "0" else { return nil }
    return Int(s)
}

import ESFTKernels
import Foundation

/// How the router picks each token's experts.
public enum TopKMethod: String, Sendable {
    case greedy
    /// DeepSeek-V2: the experts of the topk_group groups with the best single probability.
    case groupLimitedGreedy = "group_limited_greedy"
    /// DeepSeek-V3: groups ranked by the sum of their two best biased scores; the others' scores count as 0.
    case noauxTC = "noaux_tc"
}

/// The auxiliary load-balancing loss a family defines.
public enum BalanceLoss: Equatable, Sendable {
    /// DeepSeek's sequence-level loss, per MoE layer (`Router.auxLoss`).
    case sequence
    /// None (DeepSeek-V3: balanced by its selection bias; transformers defines no auxiliary loss for it).
    case none
    /// The switch-transformer loss transformers gives Qwen, OLMoE and Mixtral: counts and probabilities pooled
    /// over all MoE layers and tokens, E·Σ_e f_e·P_e; `coefficient` is the config's router_aux_loss_coef.
    case switchPooled(coefficient: Double)
}

/// YaRN RoPE scaling as Hugging Face's `_compute_yarn_parameters` applies it.
public struct YarnScaling: Equatable, Sendable {
    public var factor: Double
    public var originalMaxPositionEmbeddings: Int
    public var betaFast: Double
    public var betaSlow: Double
    public var mscale: Double?
    public var mscaleAllDim: Double?
    public var attentionFactor: Double?
    public var truncate: Bool
}

/// A model's configuration: every config.json field that changes the math, read by its family
/// (`Families/`), which also names its tensors.
public struct ModelConfig: Equatable, Sendable {
    public var family: ModelFamily
    public var vocabSize: Int
    public var hiddenSize: Int
    /// The dense MLP's width (the layers that are not MoE).
    public var intermediateSize: Int
    public var numLayers: Int
    public var attention: AttentionShape
    public var nRoutedExperts: Int
    public var expertsPerToken: Int
    /// A routed expert's width.
    public var moeIntermediateSize: Int
    public var router: RouterRule
    public var sharedExperts: SharedExperts
    public var moeLayerRule: MoELayerRule
    public var rmsNormEps: Float
    public var ropeTheta: Double
    public var yarn: YarnScaling?
    public var tieWordEmbeddings: Bool
    public var maxPositionEmbeddings: Int
    public var initializerRange: Double
    /// The load-balancing loss of the family (its weight is the run's --aux-alpha).
    public var balanceLoss: BalanceLoss
    /// The embedding row that gets no gradient from the lookup (transformers' `padding_idx` = pad_token_id);
    /// nil for DeepSeek-V2, whose engine has always trained that row (docs/architecture.md).
    public var paddingIdx: Int?

    public var numHeads: Int { attention.heads }
    /// The q_a and kv_a layernorms are built with HF's default eps, not rms_norm_eps.
    public static let latentNormEps: Float = 1e-6

    public func isMoELayer(_ layer: Int) -> Bool { nRoutedExperts > 0 && moeLayerRule.isMoE(layer) }
    public var moeLayers: [Int] { (0..<numLayers).filter(isMoELayer) }
}

extension ModelConfig {
    /// Reads a Hugging Face config.json. Errors name the file and the field.
    public static func load(contentsOf url: URL) throws -> ModelConfig {
        try ModelConfig(json: JSONReader.load(url, what: "model config"))
    }

    /// A config.json already parsed by JSONSerialization (or written as a literal).
    public init(json: [String: Any], source: String) throws {
        try self.init(json: JSONReader(foundation: json, source: source))
    }

    public init(json f: JSONReader) throws {
        let modelType = try f.field("model_type").string()
        guard let family = ModelFamily(modelType: modelType) else {
            throw ESFTError("\(f.source): model_type '\(modelType)' is not supported (supported: \(ModelFamily.supported))")
        }
        self = try family.parseConfig(f)
    }

    /// Accepts both spellings: the newer `rope_parameters` {rope_type, rope_theta, ...} and the older
    /// top-level `rope_theta` + `rope_scaling` {type, ...} that DeepSeek-V2-Lite's config.json uses.
    static func parseRope(_ f: JSONReader, maxPositionEmbeddings: Int, source: String,
                          defaultTheta: Double = 10000) throws -> (Double, YarnScaling?) {
        var theta = try f.optionalField("rope_theta")?.double() ?? defaultTheta
        let field: String
        let params: JSONReader?
        if let p = try f.optionalField("rope_parameters") {
            field = "rope_parameters"; params = p
            theta = try p.optionalField("rope_theta")?.double() ?? theta
        } else {
            field = "rope_scaling"; params = try f.optionalField("rope_scaling")
        }
        guard let p = params else { return (theta, nil) }
        let type = try p.optionalField("rope_type")?.string() ?? p.optionalField("type")?.string() ?? "default"
        switch type {
        case "default":
            return (theta, nil)
        case "yarn":
            let original = try p.optionalField("original_max_position_embeddings")?.int() ?? maxPositionEmbeddings
            let factor = try p.optionalField("factor")?.double() ?? Double(maxPositionEmbeddings) / Double(original)
            guard factor > 0 else { throw ESFTError("\(source): \(field).factor must be positive") }
            let yarn = YarnScaling(
                factor: factor, originalMaxPositionEmbeddings: original,
                betaFast: try p.optionalField("beta_fast")?.double() ?? 32, betaSlow: try p.optionalField("beta_slow")?.double() ?? 1,
                mscale: try p.optionalField("mscale")?.double(), mscaleAllDim: try p.optionalField("mscale_all_dim")?.double(),
                attentionFactor: try p.optionalField("attention_factor")?.double(), truncate: try p.optionalField("truncate")?.bool() ?? true)
            return (theta, yarn)
        default:
            throw ESFTError("\(source): \(field) type '\(type)' is not supported (supported: default, yarn)")
        }
    }
}

extension ModelConfig {
    /// What every family reads alike: the refusals of what no supported family computes (an activation other
    /// than SiLU, attention dropout, MLP biases), then vocab_size, hidden_size, intermediate_size, num_hidden_layers.
    static func commonFields(_ f: JSONReader, family: String) throws -> (vocab: Int, hidden: Int, intermediate: Int, layers: Int) {
        let source = f.source
        if let act = try f.optionalField("hidden_act")?.string(), act != "silu" {
            throw ESFTError("\(source): hidden_act '\(act)' is not supported (supported: silu)")
        }
        if try f.optionalField("mlp_bias")?.bool() == true {
            throw ESFTError("\(source): mlp_bias true is not supported (\(family) MLPs have no bias)")
        }
        if let drop = try f.optionalField("attention_dropout")?.double(), drop != 0 {
            throw ESFTError("\(source): attention_dropout \(drop) is not supported (only 0)")
        }
        return (try positiveInt(f, "vocab_size"), try positiveInt(f, "hidden_size"), try positiveInt(f, "intermediate_size"),
                try positiveInt(f, "num_hidden_layers"))
    }
}

/// A required field that must be a positive integer.
func positiveInt(_ f: JSONReader, _ key: String) throws -> Int {
    let field = try f.field(key), v = try field.int()
    guard v > 0 else { throw field.fail("must be positive, got \(v)") }
    return v
}

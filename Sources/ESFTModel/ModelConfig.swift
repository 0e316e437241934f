import ESFTKernels
import Foundation

/// How the router picks each token's experts.
public enum TopKMethod: String, Sendable {
    case greedy
    case groupLimitedGreedy = "group_limited_greedy"
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
    public var intermediateSize: Int
    public var moeIntermediateSize: Int
    public var numLayers: Int
    public var numHeads: Int
    public var qLoraRank: Int?
    public var kvLoraRank: Int
    public var qkNopeHeadDim: Int
    public var qkRopeHeadDim: Int
    public var vHeadDim: Int
    public var attentionBias: Bool
    public var nRoutedExperts: Int
    public var nSharedExperts: Int
    public var expertsPerToken: Int
    public var firstKDenseReplace: Int
    public var moeLayerFreq: Int
    public var topkMethod: TopKMethod
    public var nGroup: Int
    public var topkGroup: Int
    public var normTopkProb: Bool
    public var routedScalingFactor: Float
    public var rmsNormEps: Float
    public var ropeTheta: Double
    public var yarn: YarnScaling?
    public var tieWordEmbeddings: Bool
    public var maxPositionEmbeddings: Int
    public var initializerRange: Double

    public var qkHeadDim: Int { qkNopeHeadDim + qkRopeHeadDim }
    /// The q_a and kv_a layernorms are built with HF's default eps, not rms_norm_eps.
    public static let latentNormEps: Float = 1e-6

    /// DeepSeek's rule: layer l is MoE when l ≥ first_k_dense_replace and l % moe_layer_freq == 0.
    public func isMoELayer(_ layer: Int) -> Bool {
        nRoutedExperts > 0 && layer >= firstKDenseReplace && layer % moeLayerFreq == 0
    }
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
        guard let family = ModelFamily(rawValue: modelType) else {
            throw ESFTError("\(f.source): model_type '\(modelType)' is not supported (supported: \(ModelFamily.supported))")
        }
        self = try family.parseConfig(f)
    }

    /// Accepts both spellings: the newer `rope_parameters` {rope_type, rope_theta, ...} and the older
    /// top-level `rope_theta` + `rope_scaling` {type, ...} that DeepSeek-V2-Lite's config.json uses.
    static func parseRope(_ f: JSONReader, maxPositionEmbeddings: Int, source: String) throws -> (Double, YarnScaling?) {
        var theta = try f.optionalField("rope_theta")?.double() ?? 10000
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

/// A required field that must be a positive integer.
func positiveInt(_ f: JSONReader, _ key: String) throws -> Int {
    let field = try f.field(key), v = try field.int()
    guard v > 0 else { throw field.fail("must be positive, got \(v)") }
    return v
}

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

/// A DeepSeek-V2 (`model_type: deepseek_v2`) configuration: every config.json field that changes the math.
public struct ModelConfig: Equatable, Sendable {
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
        let source = f.source
        let modelType = try f.field("model_type").string()
        guard modelType == "deepseek_v2" else {
            throw ESFTError("\(source): model_type '\(modelType)' is not supported (supported: deepseek_v2)")
        }
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

    /// Accepts both spellings: the newer `rope_parameters` {rope_type, rope_theta, ...} and the older
    /// top-level `rope_theta` + `rope_scaling` {type, ...} that DeepSeek-V2-Lite's config.json uses.
    private static func parseRope(_ f: JSONReader, maxPositionEmbeddings: Int, source: String) throws -> (Double, YarnScaling?) {
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
private func positiveInt(_ f: JSONReader, _ key: String) throws -> Int {
    let field = try f.field(key), v = try field.int()
    guard v > 0 else { throw field.fail("must be positive, got \(v)") }
    return v
}

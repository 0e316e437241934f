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
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw ESFTError("\(url.path): cannot read model config (\(error.localizedDescription))")
        }
        let object: Any
        do { object = try JSONSerialization.jsonObject(with: data) } catch {
            throw ESFTError("\(url.path): not valid JSON (\(error.localizedDescription))")
        }
        guard let dict = object as? [String: Any] else {
            throw ESFTError("\(url.path): expected a JSON object at the top level")
        }
        return try ModelConfig(json: dict, source: url.path)
    }

    public init(json: [String: Any], source: String) throws {
        let f = JSONFields(json, source: source)
        let modelType = try f.string("model_type")
        guard modelType == "deepseek_v2" else {
            throw ESFTError("\(source): model_type '\(modelType)' is not supported (supported: deepseek_v2)")
        }
        if let act = try f.optionalString("hidden_act"), act != "silu" {
            throw ESFTError("\(source): hidden_act '\(act)' is not supported (supported: silu)")
        }
        if try f.optionalBool("mlp_bias") == true {
            throw ESFTError("\(source): mlp_bias true is not supported (DeepSeek-V2 MLPs have no bias)")
        }
        if let scoring = try f.optionalString("scoring_func"), scoring != "softmax" {
            throw ESFTError("\(source): scoring_func '\(scoring)' is not supported (supported: softmax)")
        }
        if let drop = try f.optionalDouble("attention_dropout"), drop != 0 {
            throw ESFTError("\(source): attention_dropout \(drop) is not supported (only 0)")
        }

        vocabSize = try f.positiveInt("vocab_size")
        hiddenSize = try f.positiveInt("hidden_size")
        intermediateSize = try f.positiveInt("intermediate_size")
        numLayers = try f.positiveInt("num_hidden_layers")
        numHeads = try f.positiveInt("num_attention_heads")
        if let kvHeads = try f.optionalInt("num_key_value_heads"), kvHeads != numHeads {
            throw ESFTError("\(source): num_key_value_heads \(kvHeads) must equal num_attention_heads \(numHeads) for MLA")
        }
        qLoraRank = try f.optionalInt("q_lora_rank")
        if let r = qLoraRank, r <= 0 { throw ESFTError("\(source): q_lora_rank must be null or positive, got \(r)") }
        kvLoraRank = try f.positiveInt("kv_lora_rank")
        qkNopeHeadDim = try f.positiveInt("qk_nope_head_dim")
        qkRopeHeadDim = try f.positiveInt("qk_rope_head_dim")
        guard qkRopeHeadDim % 2 == 0 else {
            throw ESFTError("\(source): qk_rope_head_dim must be even (RoPE rotates pairs), got \(qkRopeHeadDim)")
        }
        vHeadDim = try f.positiveInt("v_head_dim")
        attentionBias = try f.optionalBool("attention_bias") ?? false

        nRoutedExperts = try f.optionalInt("n_routed_experts") ?? 0
        nSharedExperts = try f.optionalInt("n_shared_experts") ?? 0
        moeIntermediateSize = try f.optionalInt("moe_intermediate_size") ?? 0
        expertsPerToken = try f.optionalInt("num_experts_per_tok") ?? 0
        firstKDenseReplace = try f.optionalInt("first_k_dense_replace") ?? 0
        moeLayerFreq = try f.optionalInt("moe_layer_freq") ?? 1
        let method = try f.optionalString("topk_method") ?? "greedy"
        guard let m = TopKMethod(rawValue: method) else {
            throw ESFTError("\(source): topk_method '\(method)' is not supported (supported: greedy, group_limited_greedy)")
        }
        topkMethod = m
        nGroup = try f.optionalInt("n_group") ?? 1
        topkGroup = try f.optionalInt("topk_group") ?? 1
        normTopkProb = try f.optionalBool("norm_topk_prob") ?? false
        routedScalingFactor = Float(try f.optionalDouble("routed_scaling_factor") ?? 1)
        rmsNormEps = Float(try f.optionalDouble("rms_norm_eps") ?? 1e-6)
        tieWordEmbeddings = try f.optionalBool("tie_word_embeddings") ?? false
        maxPositionEmbeddings = try f.optionalInt("max_position_embeddings") ?? 2048
        initializerRange = try f.optionalDouble("initializer_range") ?? 0.02

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
    }

    /// Accepts both spellings: the newer `rope_parameters` {rope_type, rope_theta, ...} and the older
    /// top-level `rope_theta` + `rope_scaling` {type, ...} that DeepSeek-V2-Lite's config.json uses.
    private static func parseRope(_ f: JSONFields, maxPositionEmbeddings: Int, source: String) throws -> (Double, YarnScaling?) {
        var theta = try f.optionalDouble("rope_theta") ?? 10000
        let field: String
        let params: JSONFields?
        if let p = try f.optionalObject("rope_parameters") {
            field = "rope_parameters"; params = p
            theta = try p.optionalDouble("rope_theta") ?? theta
        } else {
            field = "rope_scaling"; params = try f.optionalObject("rope_scaling")
        }
        guard let p = params else { return (theta, nil) }
        let type = try p.optionalString("rope_type") ?? p.optionalString("type") ?? "default"
        switch type {
        case "default":
            return (theta, nil)
        case "yarn":
            let original = try p.optionalInt("original_max_position_embeddings") ?? maxPositionEmbeddings
            let factor = try p.optionalDouble("factor") ?? Double(maxPositionEmbeddings) / Double(original)
            guard factor > 0 else { throw ESFTError("\(source): \(field).factor must be positive") }
            let yarn = YarnScaling(
                factor: factor, originalMaxPositionEmbeddings: original,
                betaFast: try p.optionalDouble("beta_fast") ?? 32, betaSlow: try p.optionalDouble("beta_slow") ?? 1,
                mscale: try p.optionalDouble("mscale"), mscaleAllDim: try p.optionalDouble("mscale_all_dim"),
                attentionFactor: try p.optionalDouble("attention_factor"), truncate: try p.optionalBool("truncate") ?? true)
            return (theta, yarn)
        default:
            throw ESFTError("\(source): \(field) type '\(type)' is not supported (supported: default, yarn)")
        }
    }
}

/// Typed access to a JSON object's fields with errors that name the file and the field.
struct JSONFields {
    let dict: [String: Any]
    let source: String
    let prefix: String

    init(_ dict: [String: Any], source: String, prefix: String = "") {
        self.dict = dict; self.source = source; self.prefix = prefix
    }

    private func fail(_ key: String, _ what: String) -> ESFTError {
        ESFTError("\(source): field '\(prefix)\(key)' \(what)")
    }
    private func value(_ key: String) -> Any? {
        guard let v = dict[key], !(v is NSNull) else { return nil }
        return v
    }
    private func isBool(_ v: Any) -> Bool { isJSONBoolean(v) }

    func string(_ key: String) throws -> String {
        guard let v = try optionalString(key) else { throw fail(key, "is missing") }
        return v
    }
    func optionalString(_ key: String) throws -> String? {
        guard let v = value(key) else { return nil }
        guard let s = v as? String else { throw fail(key, "must be a string") }
        return s
    }
    func optionalInt(_ key: String) throws -> Int? {
        guard let v = value(key) else { return nil }
        if v is String || isBool(v) { throw fail(key, "must be an integer, got \(v)") }
        guard let n = v as? NSNumber, let d = Optional(n.doubleValue), d == d.rounded(), abs(d) < 1e15 else {
            throw fail(key, "must be an integer, got \(v)")
        }
        return Int(d)
    }
    func positiveInt(_ key: String) throws -> Int {
        guard let v = try optionalInt(key) else { throw fail(key, "is missing") }
        guard v > 0 else { throw fail(key, "must be positive, got \(v)") }
        return v
    }
    func optionalDouble(_ key: String) throws -> Double? {
        guard let v = value(key) else { return nil }
        if v is String || isBool(v) { throw fail(key, "must be a number, got \(v)") }
        guard let n = v as? NSNumber, n.doubleValue.isFinite else { throw fail(key, "must be a finite number, got \(v)") }
        return n.doubleValue
    }
    func optionalBool(_ key: String) throws -> Bool? {
        guard let v = value(key) else { return nil }
        if let b = v as? Bool, isBool(v) || !(v is NSNumber) { return b }
        throw fail(key, "must be true or false, got \(v)")
    }
    func optionalObject(_ key: String) throws -> JSONFields? {
        guard let v = value(key) else { return nil }
        guard let d = v as? [String: Any] else { throw fail(key, "must be an object") }
        return JSONFields(d, source: source, prefix: prefix + key + ".")
    }
}

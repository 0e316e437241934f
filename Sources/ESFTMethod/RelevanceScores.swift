import ESFTBase

/// How token contributions are averaged into a score.
public enum ScoreNormalization: String, CaseIterable, Sendable {
    /// The paper: average over samples of each sample's per-token average, (1/N_s) Σ_j (1/L_j) Σ_{t∈j}.
    case samples
    /// The reference repository's shipped results: pooled over all tokens, (1/N_tok) Σ_t.
    case tokens
}

/// Which relevance score selection ranks experts by.
public enum ScoreMethod: String, CaseIterable, Sendable {
    /// Average gate score g_i^l (ESFT-Gate).
    case gate
    /// Token selection ratio r_i^l (ESFT-Token).
    case token

    public init(parsing s: String, source: String) throws {
        guard let m = ScoreMethod(rawValue: s) else {
            throw ESFTError("\(source): unknown method '\(s)' (expected gate or token)")
        }
        self = m
    }
}

/// Where scores came from, stored with them so a selection can be traced and checked against a model.
public struct ScoresMetadata: Equatable, Sendable {
    public var normalize: ScoreNormalization
    public var samples: Int
    public var tokens: Int
    public var topK: Int
    public var experts: Int
    public var layers: [Int]
    /// `modelFingerprint(config:)` of the model that routed, nil when unknown (reference logs).
    public var modelFingerprint: String?
    /// A digest of the scored data, nil when unknown.
    public var dataDigest: String?
    public var seed: Int?
    public var ranks: Int
    /// A human-readable origin ("reference logs DIR", "model DIR on DATA").
    public var source: String

    public init(normalize: ScoreNormalization, samples: Int, tokens: Int, topK: Int, experts: Int, layers: [Int],
                modelFingerprint: String? = nil, dataDigest: String? = nil, seed: Int? = nil, ranks: Int = 1,
                source: String) {
        self.normalize = normalize; self.samples = samples; self.tokens = tokens; self.topK = topK
        self.experts = experts; self.layers = layers; self.modelFingerprint = modelFingerprint
        self.dataDigest = dataDigest; self.seed = seed; self.ranks = ranks; self.source = source
    }
}

/// Per MoE layer and expert: the average gate score and the token selection ratio.
public struct RelevanceScores: Equatable, Sendable {
    /// layer → score of expert 0..<E.
    public var gate: [Int: [Double]]
    public var token: [Int: [Double]]
    public var metadata: ScoresMetadata

    public init(gate: [Int: [Double]], token: [Int: [Double]], metadata: ScoresMetadata) {
        self.gate = gate; self.token = token; self.metadata = metadata
    }

    public func scores(_ method: ScoreMethod, layer: Int) -> [Double]? {
        method == .gate ? gate[layer] : token[layer]
    }

    /// Scores from accumulated routing. Every layer must have seen the same tokens and samples (they
    /// come from the same forward passes); anything else means the inputs were inconsistent.
    /// `metadata.layers/experts/topK/samples/tokens` are filled in from the statistics.
    public init(statistics s: RoutingStatistics, normalize: ScoreNormalization, source: String,
                modelFingerprint: String? = nil, dataDigest: String? = nil, seed: Int? = nil, ranks: Int = 1) throws {
        let tokens = s.tokenCount[0], samples = s.sampleCount[0]
        for (slot, layer) in s.layers.enumerated() where s.tokenCount[slot] != tokens || s.sampleCount[slot] != samples {
            throw ESFTError("\(source): layer \(layer) saw \(s.tokenCount[slot]) tokens in \(s.sampleCount[slot]) samples, but layer \(s.layers[0]) saw \(tokens) tokens in \(samples) samples")
        }
        guard tokens > 0 else { throw ESFTError("\(source): no counted tokens, nothing to score") }
        let e = s.experts, k = Double(s.topK)
        var gate: [Int: [Double]] = [:], token: [Int: [Double]] = [:]
        for (slot, layer) in s.layers.enumerated() {
            let cells = (slot * e)..<(slot * e + e)
            switch normalize {
            case .tokens:
                let n = Double(tokens)
                gate[layer] = cells.map { s.gateSum[$0] / n }
                token[layer] = cells.map { Double(s.selectionCount[$0]) / k / n }
            case .samples:
                let n = Double(samples)
                gate[layer] = cells.map { s.sampleGateSum[$0] / n }
                token[layer] = cells.map { s.sampleTokenSum[$0] / n }
            }
        }
        self.gate = gate; self.token = token
        metadata = ScoresMetadata(normalize: normalize, samples: Int(samples), tokens: Int(tokens), topK: s.topK,
                                  experts: e, layers: s.layers, modelFingerprint: modelFingerprint,
                                  dataDigest: dataDigest, seed: seed, ranks: ranks, source: source)
    }
}

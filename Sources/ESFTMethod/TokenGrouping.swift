import ESFTBase

/// Which tokens of a forward pass count for relevance scoring and which sample each belongs to.
/// Built once per batch and shared by every MoE layer's routing of that batch.
///
/// A sample must lie wholly inside one grouping (its length L_j is counted here); sample ids are local
/// to the grouping. Padding (and anything else that should not count) is marked not counted.
public struct TokenGrouping {
    public let tokens: Int
    /// Tokens that count (not padding).
    public let countedTokens: Int
    /// Samples with at least one counted token; samples with none do not enter N_s.
    public let samples: Int
    /// 1 / L_j of the token's sample, 0 for tokens that do not count.
    let inverseSampleLength: [Double]

    /// `sampleOfToken[t]` is token t's sample id; a negative id, or `counted[t] == false`, means the
    /// token does not count.
    public init(sampleOfToken: [Int32], counted: [Bool]? = nil) throws {
        if let counted, counted.count != sampleOfToken.count {
            throw ESFTError("token grouping: counted has \(counted.count) entries, sampleOfToken has \(sampleOfToken.count)")
        }
        func counts(_ t: Int) -> Bool { sampleOfToken[t] >= 0 && (counted?[t] ?? true) }
        var length: [Int32: Int] = [:]
        for t in 0..<sampleOfToken.count where counts(t) { length[sampleOfToken[t], default: 0] += 1 }
        var inverse = [Double](repeating: 0, count: sampleOfToken.count)
        var total = 0
        for t in 0..<sampleOfToken.count where counts(t) {
            inverse[t] = 1 / Double(length[sampleOfToken[t]]!)
            total += 1
        }
        tokens = sampleOfToken.count
        countedTokens = total
        samples = length.count
        inverseSampleLength = inverse
    }

    /// Every token counts and they all form one sample (one line of a reference routing log).
    public static func oneSample(tokens: Int) -> TokenGrouping {
        TokenGrouping(tokens: tokens, countedTokens: tokens, samples: tokens > 0 ? 1 : 0,
                      inverseSampleLength: [Double](repeating: tokens > 0 ? 1 / Double(tokens) : 0, count: tokens))
    }

    private init(tokens: Int, countedTokens: Int, samples: Int, inverseSampleLength: [Double]) {
        self.tokens = tokens; self.countedTokens = countedTokens
        self.samples = samples; self.inverseSampleLength = inverseSampleLength
    }
}

import ESFTBase
import ESFTModel

/// Dispatch volume of a placement on recorded routing, averaged over tokens and MoE layers.
public struct PlacementEvaluation: Equatable {
    public let kind: String
    public let ranks: Int
    /// Rows per token per layer: distinct owner ranks of its top-k (esft's scheme; k for one row per pair).
    public let rowsPerToken: Double
    /// Of those, the rows that leave the token's rank, with tokens spread evenly over ranks: a token's own
    /// rank is one of its d owner ranks with probability d/R, so d·(1 − 1/R) rows go off-rank.
    public var offRankRowsPerToken: Double { rowsPerToken * (1 - 1 / Double(ranks)) }
    /// The most loaded rank's (token, expert) pairs over the mean, worst layer.
    public let maxLoadOverMean: Double
    /// Trainable experts on the fullest rank over the mean, worst layer (nil without an expert config).
    public let maxTrainableOverMean: Double?

    /// Bytes a dispatched row costs over a training step's four exchanges, fp32: forward dispatch
    /// [x | K weights] + K Int32 slots = 4(D+2K), forward combine 4D, backward dispatch 4D, backward
    /// combine [∂x | ∂weight per slot] 4(D+K): 16D + 12K in all (docs/training.md, "Dispatch protocol").
    public static func bytesPerRow(hidden d: Int, k: Int) -> Int { 16 * d + 12 * k }

    public init(kind: String, placement: ExpertPlacement, routing: [LayerRouting], trainable: [Int: [Int]]?) {
        self.kind = kind; ranks = placement.ranks
        var rows = 0, tokens = 0, worstLoad = 0.0, worstTrainable = 0.0
        for r in routing {
            let p = placement.layer(r.layer)
            rows += r.rows(p); tokens += r.tokens
            let load = r.rankLoad(p), mean = Double(load.reduce(0, +)) / Double(ranks)
            if mean > 0 { worstLoad = max(worstLoad, Double(load.max()!) / mean) }
            if let chosen = trainable?[r.layer], !chosen.isEmpty {
                var per = [Int](repeating: 0, count: ranks)
                for e in chosen { per[p.owner(of: e)] += 1 }
                worstTrainable = max(worstTrainable, Double(per.max()!) / (Double(chosen.count) / Double(ranks)))
            }
        }
        rowsPerToken = tokens > 0 ? Double(rows) / Double(tokens) : 0
        maxLoadOverMean = worstLoad
        maxTrainableOverMean = trainable == nil ? nil : worstTrainable
    }

    /// The reference's scheme: one row per (token, expert) pair, k per token, whatever the placement.
    public init(perPairWithK k: Int, ranks: Int) {
        kind = "per (token, expert)"; self.ranks = ranks; rowsPerToken = Double(k); maxLoadOverMean = .nan; maxTrainableOverMean = nil
    }
}

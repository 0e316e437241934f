import ESFTBase
import Foundation

/// How many experts of a layer to keep.
public enum SelectionRule: Equatable, Sendable {
    /// Take experts in descending score while the running sum is still below p; the expert that
    /// crosses p is included; at least one. The paper uses p = 0.1 (gate) and 0.2 (token).
    case threshold(Double)
    /// The k highest-scoring experts.
    case topK(Int)
}

/// Everything that decides a selection.
public struct SelectionOptions: Equatable, Sendable {
    public var method: ScoreMethod
    public var rule: SelectionRule
    /// Round scores to this many decimals before ranking and summing (the reference selects from
    /// summary.json, whose scores are rounded to 4).
    public var roundDecimals: Int?

    public init(method: ScoreMethod, rule: SelectionRule, roundDecimals: Int? = nil) {
        self.method = method; self.rule = rule; self.roundDecimals = roundDecimals
    }

    /// Checks the rule against the number of experts; `source` prefixes the message (a command or file).
    public func validate(experts: Int, source: String) throws {
        switch rule {
        case .threshold(let p):
            guard p > 0 && p <= 1 else { throw ESFTError("\(source): --threshold: threshold p must be in (0, 1], got \(p)") }
        case .topK(let k):
            guard k >= 1 && k <= experts else {
                throw ESFTError("\(source): --top-k: top-k must be in 1...\(experts) (the number of routed experts), got \(k)")
            }
        }
        if let d = roundDecimals, !(0...15).contains(d) {
            throw ESFTError("\(source): --round: round must be in 0...15 decimals, got \(d)")
        }
    }
}

/// One layer's choice: expert ids in descending-score order and the scores they were ranked by.
public struct LayerSelection: Equatable, Sendable {
    public let layer: Int
    public let experts: [Int]
    /// The scores selection used (rounded when asked), expert 0..<E.
    public let scores: [Double]
    public var cumulativeScore: Double { experts.reduce(0) { $0 + scores[$1] } }
}

/// `x` rounded to `decimals` places the way Python's round() does: correctly rounded from the exact
/// binary value, exact ties to even. printf does exactly that, so this matches the reference's files.
public func roundedScore(_ x: Double, decimals: Int) -> Double {
    Double(String(format: "%.\(decimals)f", x))!
}

/// Experts of one layer, best first (ties: lower id first), cut by the rule.
public func selectExperts(scores: [Double], rule: SelectionRule) -> [Int] {
    let order = scores.indices.sorted { scores[$0] != scores[$1] ? scores[$0] > scores[$1] : $0 < $1 }
    switch rule {
    case .topK(let k):
        return Array(order.prefix(k))
    case .threshold(let p):
        var chosen: [Int] = [], sum = 0.0
        for i in order {
            if !chosen.isEmpty && sum >= p { break }
            chosen.append(i)
            sum += scores[i]
        }
        return chosen
    }
}

/// Selects experts in every layer of the scores.
public func selectExperts(from scores: RelevanceScores, options: SelectionOptions) throws -> [LayerSelection] {
    try options.validate(experts: scores.metadata.experts, source: "select")
    return scores.metadata.layers.map { layer in
        var s = scores.scores(options.method, layer: layer)!
        if let d = options.roundDecimals { s = s.map { roundedScore($0, decimals: d) } }
        return LayerSelection(layer: layer, experts: selectExperts(scores: s, rule: options.rule), scores: s)
    }
}

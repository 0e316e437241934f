import ESFTBase
import ESFTModel

/// Sums over routed tokens from which both relevance scores follow, per MoE layer l and expert i:
///
/// - pooled over tokens: Σ_t g_{i,t} (fp64), Σ_t 1[i ∈ topK(t)] (Int64), and N_tok;
/// - normalised per sample (the paper): Σ_j (1/L_j) Σ_{t∈j} g_{i,t} and Σ_j (1/L_j) Σ_{t∈j} 1[i ∈ topK(t)]/K
///   (fp64), and N_s.
///
/// Mergeable: ranks accumulate their own tokens, rank 0 sums `doubleState` and `integerState`
/// elementwise (MPI_Reduce with MPI_SUM) and rebuilds with `init(layers:experts:topK:doubleState:integerState:)`.
/// Integer counts are exact whatever the order; fp64 sums may differ in the last bits with summation order
/// (rank count, batch order), far below the 4 decimals scores are usually compared at.
public struct RoutingStatistics: Equatable {
    /// The model's MoE layer indices, in order.
    public let layers: [Int]
    public let experts: Int
    public let topK: Int

    // [layer slot][expert], flattened.
    public private(set) var gateSum: [Double]
    public private(set) var selectionCount: [Int64]
    public private(set) var sampleGateSum: [Double]
    public private(set) var sampleTokenSum: [Double]
    // [layer slot]
    public private(set) var tokenCount: [Int64]
    public private(set) var sampleCount: [Int64]

    private let slotOfLayer: [Int: Int]

    public init(layers: [Int], experts: Int, topK: Int) throws {
        guard !layers.isEmpty else { throw ESFTError("routing statistics: no MoE layers") }
        guard Set(layers).count == layers.count else { throw ESFTError("routing statistics: duplicate layer in \(layers)") }
        guard experts >= 1 else { throw ESFTError("routing statistics: experts must be ≥ 1, got \(experts)") }
        guard topK >= 1 && topK <= experts else {
            throw ESFTError("routing statistics: top-k \(topK) must be in 1...\(experts) (the number of experts)")
        }
        self.layers = layers; self.experts = experts; self.topK = topK
        let cells = layers.count * experts
        gateSum = [Double](repeating: 0, count: cells)
        selectionCount = [Int64](repeating: 0, count: cells)
        sampleGateSum = [Double](repeating: 0, count: cells)
        sampleTokenSum = [Double](repeating: 0, count: cells)
        tokenCount = [Int64](repeating: 0, count: layers.count)
        sampleCount = [Int64](repeating: 0, count: layers.count)
        slotOfLayer = Dictionary(uniqueKeysWithValues: layers.enumerated().map { ($1, $0) })
    }

    /// An accumulator shaped for a model: every MoE layer, its routed experts and top-K.
    public init(model: ModelConfig) throws {
        try self.init(layers: model.moeLayers, experts: model.nRoutedExperts, topK: model.expertsPerToken)
    }

    public func slot(ofLayer layer: Int) -> Int? { slotOfLayer[layer] }

    /// Adds one layer's routing of a batch: `ids` and `probs` are tokens × K, token-major; `probs` are the
    /// softmax probabilities of the chosen experts (g_{i,t}).
    public mutating func add<P: BinaryFloatingPoint>(layer: Int, ids: UnsafeBufferPointer<Int32>,
                                                     probs: UnsafeBufferPointer<P>, grouping: TokenGrouping) throws {
        guard let slot = slotOfLayer[layer] else {
            throw ESFTError("routing statistics: layer \(layer) is not an MoE layer of \(layers)")
        }
        let k = topK, e = experts
        guard ids.count == grouping.tokens * k, probs.count == ids.count else {
            throw ESFTError("routing statistics: layer \(layer): \(ids.count) ids and \(probs.count) probabilities for \(grouping.tokens) tokens × top-\(k)")
        }
        for id in ids where id < 0 || Int(id) >= e {
            throw ESFTError("routing statistics: layer \(layer): expert id \(id) is outside 0..<\(e)")
        }
        let base = slot * e, perChoice = 1 / Double(k)
        let weight = grouping.inverseSampleLength
        for t in 0..<grouping.tokens where weight[t] > 0 {
            for j in (t * k)..<(t * k + k) {
                let cell = base + Int(ids[j]), g = Double(probs[j])
                gateSum[cell] += g
                selectionCount[cell] += 1
                sampleGateSum[cell] += g * weight[t]
                sampleTokenSum[cell] += perChoice * weight[t]
            }
        }
        tokenCount[slot] += Int64(grouping.countedTokens)
        sampleCount[slot] += Int64(grouping.samples)
    }

    /// Adds what the engine's routing observer hands out for one MoE layer.
    public mutating func add(_ view: RoutingView, grouping: TokenGrouping) throws {
        guard view.k == topK, view.experts == experts else {
            throw ESFTError("routing statistics: layer \(view.layer) routes top-\(view.k) of \(view.experts) experts, expected top-\(topK) of \(experts)")
        }
        let n = view.tokens * view.k
        try add(layer: view.layer, ids: UnsafeBufferPointer(start: view.topkIdx, count: n),
                probs: UnsafeBufferPointer(start: view.topkGate, count: n), grouping: grouping)
    }

    /// Adds another accumulator's sums (another rank's, another batch's).
    public mutating func merge(_ other: RoutingStatistics) throws {
        guard other.layers == layers, other.experts == experts, other.topK == topK else {
            throw ESFTError("routing statistics: cannot merge layers \(other.layers) × \(other.experts) experts top-\(other.topK) into layers \(layers) × \(experts) experts top-\(topK)")
        }
        for c in gateSum.indices {
            gateSum[c] += other.gateSum[c]
            selectionCount[c] += other.selectionCount[c]
            sampleGateSum[c] += other.sampleGateSum[c]
            sampleTokenSum[c] += other.sampleTokenSum[c]
        }
        for s in tokenCount.indices {
            tokenCount[s] += other.tokenCount[s]
            sampleCount[s] += other.sampleCount[s]
        }
    }

    // MARK: flat state for MPI reductions

    /// gateSum, sampleGateSum, sampleTokenSum: 3 × layers × experts values.
    public var doubleState: [Double] { gateSum + sampleGateSum + sampleTokenSum }
    /// selectionCount (layers × experts), tokenCount (layers), sampleCount (layers).
    public var integerState: [Int64] { selectionCount + tokenCount + sampleCount }

    /// Rebuilds an accumulator from (summed) flat state of one with the same shape.
    public init(layers: [Int], experts: Int, topK: Int, doubleState: [Double], integerState: [Int64]) throws {
        try self.init(layers: layers, experts: experts, topK: topK)
        let cells = layers.count * experts, n = layers.count
        guard doubleState.count == 3 * cells, integerState.count == cells + 2 * n else {
            throw ESFTError("routing statistics: flat state has \(doubleState.count) doubles and \(integerState.count) integers, expected \(3 * cells) and \(cells + 2 * n) for \(n) layers × \(experts) experts")
        }
        gateSum = Array(doubleState[0..<cells])
        sampleGateSum = Array(doubleState[cells..<(2 * cells)])
        sampleTokenSum = Array(doubleState[(2 * cells)...])
        selectionCount = Array(integerState[0..<cells])
        tokenCount = Array(integerState[cells..<(cells + n)])
        sampleCount = Array(integerState[(cells + n)...])
    }

    public static func == (a: RoutingStatistics, b: RoutingStatistics) -> Bool {
        a.layers == b.layers && a.experts == b.experts && a.topK == b.topK
            && a.doubleState == b.doubleState && a.integerState == b.integerState
    }
}

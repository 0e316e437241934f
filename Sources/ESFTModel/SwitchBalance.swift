import ESFTKernels

/// The switch-transformer load-balancing loss as transformers gives Qwen, OLMoE and Mixtral
/// (`load_balancing_loss_func`): over the R = (MoE layers)·(tokens) routing decisions of a forward,
///   aux = E · Σ_e (C_e / R) · (P_e / R),  C_e = Σ_layers Σ_tokens #{k : topk(token)_k = e},  P_e = Σ_layers Σ_tokens p_e(token)
/// pooled over layers before the product (not a sum of per-layer losses). C carries no gradient, so
/// ∂aux/∂p_e(token) = E·C_e/R² for every token of every MoE layer, added to the router's ∂probs in backward.
/// Under expert parallelism each rank holds other rows: C, P and the token count are summed over ranks
/// (one exchange after the last layer) so R ranks compute the loss of the global micro-batch, as one rank does.
final class SwitchBalance {
    let experts: Int
    private(set) var counts: [Double]
    private(set) var probabilities: [Double]
    private var decisions = 0
    private var collecting = false
    /// ∂(weight·aux)/∂p_e, the same for every token and MoE layer of the last forward.
    private(set) var gradient: [Float]

    init(experts: Int) {
        self.experts = experts
        counts = [Double](repeating: 0, count: experts); probabilities = counts
        gradient = [Float](repeating: 0, count: experts)
    }

    /// Starts a forward's statistics (the recomputed forwards of --recompute add nothing).
    func begin() {
        for e in 0..<experts { counts[e] = 0; probabilities[e] = 0 }
        decisions = 0; collecting = true
    }

    /// One MoE layer's routing over n tokens: probs_NE and topkIdx_NK.
    func add(probs: UnsafePointer<Float>, topkIdx: UnsafePointer<Int32>, tokens n: Int, k: Int) {
        guard collecting else { return }
        for t in 0..<n {
            for j in 0..<k { counts[Int(topkIdx[t * k + j])] += 1 }
            for e in 0..<experts { probabilities[e] += Double(probs[t * experts + e]) }
        }
        decisions += n
    }

    /// Ends the forward: sums the statistics over ranks, returns weight·aux and keeps its gradient. The weight
    /// is `alpha` times this micro-batch's global rows over `auxRows`, the rows the loss averages over (the
    /// step's, or a micro-batch's; nil: this forward's), so micro-batches add up as DeepSeek's loss does.
    func finish(exchange: RowExchange, alpha: Double, moeLayers: Int, seqLen: Int, auxRows: Int?) throws -> Double {
        collecting = false
        var row = counts + probabilities + [Double(decisions)]
        if exchange.ranks > 1 {
            // Every rank sends its row to every rank and sums what it receives in rank order: the same sums everywhere.
            let send = Array(repeatElement(row, count: exchange.ranks).joined())
            let received = try send.withUnsafeBufferPointer {
                try exchange.exchangeRows($0, rowsTo: [Int](repeating: 1, count: exchange.ranks), width: row.count, tag: "switch balance")
            }
            row = [Double](repeating: 0, count: row.count)
            for r in 0..<exchange.ranks { for i in 0..<row.count { row[i] += received.values[r * row.count + i] } }
        }
        let e = experts, r = row[2 * e]
        guard r > 0 else { for i in 0..<e { gradient[i] = 0 }; return 0 }
        let rows = r / Double(max(moeLayers, 1) * max(seqLen, 1))
        let weight = alpha * (auxRows.map { rows / Double($0) } ?? 1)
        var aux = 0.0
        for i in 0..<e { aux += row[i] * row[e + i] }
        aux *= Double(e) / (r * r)
        for i in 0..<e { gradient[i] = Float(weight * Double(e) * row[i] / (r * r)) }
        return weight * aux
    }
}

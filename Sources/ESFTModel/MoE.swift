import ESFTKernels

/// Routing results of one MoE layer for the tokens of a forward pass (for relevance scoring):
/// topkIdx_NK (global expert ids) and the chosen softmax probabilities topkProb_NK (before
/// renormalisation and scaling).
public struct RoutingView {
    public let layer: Int
    public let tokens: Int
    public let k: Int
    public let experts: Int
    public let topkIdx: UnsafePointer<Int32>
    public let topkProb: UnsafePointer<Float>
}

/// What an MoE layer keeps for backward: the router's outputs (probabilities, chosen experts, their raw
/// probabilities and weights), the shared experts' pre-activations and the dispatch state.
final class MoESaved: ReusableGroup {
    let probs_NE = Reusable<Float>(), topkIdx_NK = Reusable<Int32>(), topkProb_NK = Reusable<Float>()
    let topkWeight_NK = Reusable<Float>()
    let shared = SwiGLUSaved()
    let dispatch = DispatchSaved()
}

/// DeepSeek-V2 MoE block with expert parallelism: y = Σ_k w_k · expert_{idx_k}(x) + shared(x).
///
/// Where a token lives: router and top-k; one row per (token, owner rank) — a token is sent once to
/// each rank that owns any of its experts, carrying its K slots (local expert id or -1, weight).
/// Where experts live: rows are grouped per local expert (counting sort), each expert runs its SwiGLU as
/// three GEMMs on its rows, and the weighted outputs of one row's experts are summed into one row that
/// goes back. Backward retraces the same exchanges. On one rank the exchange is a copy.
struct MoELayer {
    let layer: Int
    let router: Router
    let experts: [SwiGLUWeights?]  // by global id; nil where another rank owns the expert
    let shared: SwiGLUWeights?
    let cfg: ModelConfig
    let placement: ExpertPlacement
    let exchange: RowExchange
    let counters: DispatchCounters

    init(_ p: ParameterSet, layer: Int, config c: ModelConfig, placement: ExpertPlacement, exchange: RowExchange,
         counters: DispatchCounters) throws {
        self.layer = layer; cfg = c; self.placement = placement; self.exchange = exchange; self.counters = counters
        let m = "model.layers.\(layer).mlp."
        router = Router(weight: try p.require(m + "gate.weight", shape: [c.nRoutedExperts, c.hiddenSize]), cfg: c)
        let mine = placement.ranges[exchange.rank]
        experts = try (0..<c.nRoutedExperts).map { e in
            mine.contains(e) ? try SwiGLUWeights(p, prefix: m + "experts.\(e).", dim: c.hiddenSize, inner: c.moeIntermediateSize) : nil
        }
        shared = c.nSharedExperts > 0
            ? try SwiGLUWeights(p, prefix: m + "shared_experts.", dim: c.hiddenSize, inner: c.moeIntermediateSize * c.nSharedExperts)
            : nil
    }

    private var tag: String { "layer \(layer)" }

    /// x_ND is the normed input; out_ND is written. Returns the aux loss (0 when alpha is 0).
    func forward(x: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>, batch: Int, seqLen: Int, auxAlpha: Float,
                 auxRows: Int, saved sv: MoESaved, scratch ws: Scratch, observer: ((RoutingView) -> Void)?) throws -> Double {
        let n = batch * seqLen, k = cfg.expertsPerToken, e = cfg.nRoutedExperts, d = cfg.hiddenSize
        let inner = cfg.moeIntermediateSize
        let probs = sv.probs_NE.reuse(count: n * e), topkIdx = sv.topkIdx_NK.reuse(count: n * k)
        let topkProb = sv.topkProb_NK.reuse(count: n * k), topkWeight = sv.topkWeight_NK.reuse(count: n * k)
        router.forward(x: x, n: n, probs: probs, topkIdx: topkIdx, topkProb: topkProb, topkWeight: topkWeight, scratch: ws.router)
        let ds = sv.dispatch, dws = ws.dispatch
        observer?(RoutingView(layer: layer, tokens: n, k: k, experts: e, topkIdx: topkIdx, topkProb: topkProb))

        // Source side: one row per (token, destination rank): [x | local ids | weights].
        let plan = DispatchPlan(ds, tokens: n, k: k, ranks: exchange.ranks)
        let width = d + 2 * k
        let send = dws.send_SW.reuse(count: plan.maxRows * width)
        let sendRows = plan.build(topkIdx: topkIdx, placement: placement) { row, t, slots in
            let r = send + row * width
            r.update(from: x + t * d, count: d)
            for j in 0..<k {
                let id = slots[j]
                r[d + j] = Float(id)
                r[d + k + j] = id >= 0 ? topkWeight[t * k + j] : 0
            }
        }
        counters.record(layer: layer, rows: sendRows, pairs: n * k)
        let recvCounts = try exchange.exchangeCounts(plan.sendCounts, tag: "\(tag) forward counts")
        plan.store(receiveCounts: recvCounts)
        let m = recvCounts.reduce(0, +)
        let recv = ds.received_MW.reuse(count: m * width)
        try exchange.exchangeRows(send: send, sendCounts: plan.sendCounts, receive: recv, receiveCounts: recvCounts,
                                  width: width, tag: "\(tag) forward dispatch")

        // Owner side: rows grouped per local expert, grouped GEMMs, one weighted sum per received row.
        let local = placement.ranges[exchange.rank]
        let owner = OwnerPlan(ds, rows: m, k: k, localExperts: local.count)
        owner.build(recv: recv, rows: m, width: width, dim: d, k: k)
        let a = owner.assignments
        let xg = dws.gathered_AD.reuse(count: a * d), yg = dws.expertOut_AD.reuse(count: a * d)
        owner.gather(from: recv, stride: width, into: xg, dim: d)
        let g = ds.experts.gate_NI.reuse(count: a * inner), u = ds.experts.up_NI.reuse(count: a * inner)
        let act = ws.swiglu.act_NI.reuse(count: a * inner)
        for le in 0..<local.count {
            let lo = Int(owner.offsets[le]), cnt = Int(owner.offsets[le + 1]) - lo
            experts[local.lowerBound + le]!.forward(x: xg + lo * d, n: cnt, g: g + lo * inner, u: u + lo * inner,
                                                    a: act + lo * inner, y: yg + lo * d, accumulate: false)
        }
        let ret = dws.combined_MD.reuse(count: m * d)
        owner.combine(yg, weights: owner.weights, into: ret, dim: d)

        // Back to the source: the sum of each token's returned rows.
        let back = dws.returned_SD.reuse(count: sendRows * d)
        try exchange.exchangeRows(send: ret, sendCounts: recvCounts, receive: back, receiveCounts: plan.sendCounts,
                                  width: d, tag: "\(tag) forward combine")
        plan.sumRowsPerToken(back, width: d, into: out, dim: d, accumulate: false)
        if let shared {
            let (g, u) = shared.saved(sv.shared, rows: n)
            shared.forward(x: x, n: n, g: g, u: u, a: ws.swiglu.act_NI.reuse(count: n * shared.inner), y: out, accumulate: true)
        }
        return auxAlpha > 0
            ? router.auxLoss(probs: probs, topkIdx: topkIdx, batch: batch, seqLen: seqLen, rows: auxRows, alpha: auxAlpha, dProbs: nil)
            : 0
    }

    /// dOut_ND = ∂L/∂out; dx_ND is written with ∂L/∂x (through experts, shared experts and router).
    func backward(dOut: UnsafePointer<Float>, x: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>, batch: Int,
                  seqLen: Int, auxAlpha: Float, auxRows: Int, saved sv: MoESaved, scratch ws: Scratch) throws {
        let n = batch * seqLen, k = cfg.expertsPerToken, e = cfg.nRoutedExperts, d = cfg.hiddenSize
        let inner = cfg.moeIntermediateSize
        let probs = sv.probs_NE.reuse(count: n * e), topkIdx = sv.topkIdx_NK.reuse(count: n * k)
        let topkProb = sv.topkProb_NK.reuse(count: n * k)
        let ds = sv.dispatch, dws = ws.dispatch
        if let shared {
            let (g, u) = shared.saved(sv.shared, rows: n)
            shared.backward(dy: dOut, x: x, n: n, g: g, u: u, dx: dx, accumulateDx: false, scratch: ws.swiglu)
        } else {
            dx.update(repeating: 0, count: n * d)
        }
        let plan = DispatchPlan(ds, tokens: n, k: k, ranks: exchange.ranks)
        let sendCounts = plan.sendCounts, recvCounts = plan.receiveCounts
        let sendRows = sendCounts.reduce(0, +), m = recvCounts.reduce(0, +)

        // ∂L/∂(returned row) is ∂L/∂out of its token: send it to the owners.
        let dsend = dws.dSend_SD.reuse(count: sendRows * d), drecv = dws.dReceived_MD.reuse(count: m * d)
        plan.gatherTokens(dOut, dim: d, into: dsend)
        try exchange.exchangeRows(send: dsend, sendCounts: sendCounts, receive: drecv, receiveCounts: recvCounts,
                                  width: d, tag: "\(tag) backward dispatch")

        // Owner side: expert backward per local expert; ∂L/∂w per assignment; ∂L/∂x summed per row.
        let width = d + 2 * k
        let local = placement.ranges[exchange.rank]
        let owner = OwnerPlan(ds, rows: m, k: k, localExperts: local.count)
        let a = owner.assignments
        let recv = ds.received_MW.reuse(count: m * width)
        let g = ds.experts.gate_NI.reuse(count: a * inner), u = ds.experts.up_NI.reuse(count: a * inner)
        let xg = dws.gathered_AD.reuse(count: a * d), dyg = dws.dExpertOut_AD.reuse(count: a * d)
        let dxg = dws.dGathered_AD.reuse(count: a * d), dw = dws.dWeight_A.reuse(count: a)
        owner.gather(from: recv, stride: width, into: xg, dim: d)
        owner.gather(from: drecv, stride: d, into: dyg, dim: d)
        for le in 0..<local.count {
            let lo = Int(owner.offsets[le]), cnt = Int(owner.offsets[le + 1]) - lo
            experts[local.lowerBound + le]!.backward(dy: dyg + lo * d, x: xg + lo * d, n: cnt, g: g + lo * inner,
                                                     u: u + lo * inner, rowScale: owner.weights + lo, dRowScale: dw + lo,
                                                     dx: dxg + lo * d, accumulateDx: false, scratch: ws.swiglu)
        }
        let dwidth = d + k
        let dret = dws.dCombined_MW.reuse(count: m * dwidth)
        owner.combineBackward(dxg, dWeights: dw, into: dret, dim: d, k: k)
        let dback = dws.dReturned_SW.reuse(count: sendRows * dwidth)
        try exchange.exchangeRows(send: dret, sendCounts: recvCounts, receive: dback, receiveCounts: sendCounts,
                                  width: dwidth, tag: "\(tag) backward combine")

        // Source side: ∂L/∂x through the experts, and ∂L/∂w per (token, slot) for the router.
        plan.sumRowsPerToken(dback, width: dwidth, into: dx, dim: d, accumulate: true)
        let dTopk = ws.router.dTopkWeight_NK.reuse(count: n * k)
        plan.sumSlotsPerToken(dback, width: dwidth, offset: d, into: dTopk)
        let dProbs = ws.router.dProbs_NE.reuse(count: n * e, zeroed: true)
        if auxAlpha > 0 {
            _ = router.auxLoss(probs: probs, topkIdx: topkIdx, batch: batch, seqLen: seqLen, rows: auxRows, alpha: auxAlpha, dProbs: dProbs)
        }
        router.backward(dTopkWeight: dTopk, x: x, n: n, probs: probs, topkIdx: topkIdx, topkProb: topkProb,
                        dProbs: dProbs, dx: dx, scratch: ws.router)
    }
}

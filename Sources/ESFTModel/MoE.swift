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
                 auxRows: Int, acts: Workspace, scratch ws: Workspace, observer: ((RoutingView) -> Void)?) throws -> Double {
        let n = batch * seqLen, k = cfg.expertsPerToken, e = cfg.nRoutedExperts, d = cfg.hiddenSize
        let inner = cfg.moeIntermediateSize
        let probs = acts.floats("moe.probs", n * e), topkIdx = acts.ints("moe.idx", n * k)
        let topkProb = acts.floats("moe.p", n * k), topkWeight = acts.floats("moe.w", n * k)
        router.forward(x: x, n: n, probs: probs, topkIdx: topkIdx, topkProb: topkProb, topkWeight: topkWeight, scratch: ws)
        observer?(RoutingView(layer: layer, tokens: n, k: k, experts: e, topkIdx: topkIdx, topkProb: topkProb))

        // Source side: one row per (token, destination rank): [x | local ids | weights].
        let plan = DispatchPlan(acts: acts, tokens: n, k: k, ranks: exchange.ranks)
        let width = d + 2 * k
        let send = ws.floats("moe.send", plan.maxRows * width)
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
        let recv = acts.floats("moe.recv", m * width)
        try exchange.exchangeRows(send: send, sendCounts: plan.sendCounts, receive: recv, receiveCounts: recvCounts,
                                  width: width, tag: "\(tag) forward dispatch")

        // Owner side: rows grouped per local expert, grouped GEMMs, one weighted sum per received row.
        let local = placement.ranges[exchange.rank]
        let owner = OwnerPlan(acts: acts, rows: m, k: k, localExperts: local.count)
        owner.build(recv: recv, rows: m, width: width, dim: d, k: k)
        let a = owner.assignments
        let xg = ws.floats("moe.xg", a * d), yg = ws.floats("moe.yg", a * d)
        owner.gather(from: recv, stride: width, into: xg, dim: d)
        let g = acts.floats("moe.g", a * inner), u = acts.floats("moe.u", a * inner), act = ws.floats("moe.a", a * inner)
        for le in 0..<local.count {
            let lo = Int(owner.offsets[le]), cnt = Int(owner.offsets[le + 1]) - lo
            experts[local.lowerBound + le]!.forward(x: xg + lo * d, n: cnt, g: g + lo * inner, u: u + lo * inner,
                                                    a: act + lo * inner, y: yg + lo * d, accumulate: false)
        }
        let ret = ws.floats("moe.ret", m * d)
        owner.combine(yg, weights: owner.weights, into: ret, dim: d)

        // Back to the source: the sum of each token's returned rows.
        let back = ws.floats("moe.back", sendRows * d)
        try exchange.exchangeRows(send: ret, sendCounts: recvCounts, receive: back, receiveCounts: plan.sendCounts,
                                  width: d, tag: "\(tag) forward combine")
        plan.sumRowsPerToken(back, width: d, into: out, dim: d, accumulate: false)
        if let shared {
            let si = shared.inner
            shared.forward(x: x, n: n, g: acts.floats("moe.sg", n * si), u: acts.floats("moe.su", n * si),
                           a: ws.floats("moe.sa", n * si), y: out, accumulate: true)
        }
        return auxAlpha > 0
            ? router.auxLoss(probs: probs, topkIdx: topkIdx, batch: batch, seqLen: seqLen, rows: auxRows, alpha: auxAlpha, dProbs: nil)
            : 0
    }

    /// dOut_ND = ∂L/∂out; dx_ND is written with ∂L/∂x (through experts, shared experts and router).
    func backward(dOut: UnsafePointer<Float>, x: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>, batch: Int,
                  seqLen: Int, auxAlpha: Float, auxRows: Int, acts: Workspace, scratch ws: Workspace) throws {
        let n = batch * seqLen, k = cfg.expertsPerToken, e = cfg.nRoutedExperts, d = cfg.hiddenSize
        let inner = cfg.moeIntermediateSize
        let probs = acts.floats("moe.probs", n * e), topkIdx = acts.ints("moe.idx", n * k)
        let topkProb = acts.floats("moe.p", n * k)
        if let shared {
            let si = shared.inner
            shared.backward(dy: dOut, x: x, n: n, g: acts.floats("moe.sg", n * si), u: acts.floats("moe.su", n * si),
                            dx: dx, accumulateDx: false, scratch: ws)
        } else {
            dx.update(repeating: 0, count: n * d)
        }
        let plan = DispatchPlan(acts: acts, tokens: n, k: k, ranks: exchange.ranks)
        let sendCounts = plan.sendCounts, recvCounts = plan.receiveCounts
        let sendRows = sendCounts.reduce(0, +), m = recvCounts.reduce(0, +)

        // ∂L/∂(returned row) is ∂L/∂out of its token: send it to the owners.
        let dsend = ws.floats("moe.dsend", sendRows * d), drecv = ws.floats("moe.drecv", m * d)
        plan.gatherTokens(dOut, dim: d, into: dsend)
        try exchange.exchangeRows(send: dsend, sendCounts: sendCounts, receive: drecv, receiveCounts: recvCounts,
                                  width: d, tag: "\(tag) backward dispatch")

        // Owner side: expert backward per local expert; ∂L/∂w per assignment; ∂L/∂x summed per row.
        let width = d + 2 * k
        let local = placement.ranges[exchange.rank]
        let owner = OwnerPlan(acts: acts, rows: m, k: k, localExperts: local.count)
        let a = owner.assignments
        let recv = acts.floats("moe.recv", m * width)
        let g = acts.floats("moe.g", a * inner), u = acts.floats("moe.u", a * inner)
        let xg = ws.floats("moe.xg", a * d), dyg = ws.floats("moe.dyg", a * d), dxg = ws.floats("moe.dxg", a * d)
        let dw = ws.floats("moe.dw", a)
        owner.gather(from: recv, stride: width, into: xg, dim: d)
        owner.gather(from: drecv, stride: d, into: dyg, dim: d)
        for le in 0..<local.count {
            let lo = Int(owner.offsets[le]), cnt = Int(owner.offsets[le + 1]) - lo
            experts[local.lowerBound + le]!.backward(dy: dyg + lo * d, x: xg + lo * d, n: cnt, g: g + lo * inner,
                                                     u: u + lo * inner, rowScale: owner.weights + lo, dRowScale: dw + lo,
                                                     dx: dxg + lo * d, accumulateDx: false, scratch: ws)
        }
        let dwidth = d + k
        let dret = ws.floats("moe.dret", m * dwidth)
        owner.combineBackward(dxg, dWeights: dw, into: dret, dim: d, k: k)
        let dback = ws.floats("moe.dback", sendRows * dwidth)
        try exchange.exchangeRows(send: dret, sendCounts: recvCounts, receive: dback, receiveCounts: sendCounts,
                                  width: dwidth, tag: "\(tag) backward combine")

        // Source side: ∂L/∂x through the experts, and ∂L/∂w per (token, slot) for the router.
        plan.sumRowsPerToken(dback, width: dwidth, into: dx, dim: d, accumulate: true)
        let dTopk = ws.floats("moe.dtopk", n * k)
        plan.sumSlotsPerToken(dback, width: dwidth, offset: d, into: dTopk)
        let dProbs = ws.floats("moe.dprobs", n * e, zeroed: true)
        if auxAlpha > 0 {
            _ = router.auxLoss(probs: probs, topkIdx: topkIdx, batch: batch, seqLen: seqLen, rows: auxRows, alpha: auxAlpha, dProbs: dProbs)
        }
        router.backward(dTopkWeight: dTopk, x: x, n: n, probs: probs, topkIdx: topkIdx, topkProb: topkProb,
                        dProbs: dProbs, dx: dx, scratch: ws)
    }
}

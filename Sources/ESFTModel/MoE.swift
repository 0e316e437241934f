import ESFTKernels

/// Routing results of one MoE layer for the tokens of a forward pass (for relevance scoring):
/// topkIdx_NK and the chosen softmax probabilities topkProb_NK (before renormalisation and scaling).
public struct RoutingView {
    public let layer: Int
    public let tokens: Int
    public let k: Int
    public let experts: Int
    public let topkIdx: UnsafePointer<Int32>
    public let topkProb: UnsafePointer<Float>
}

/// DeepSeek-V2 MoE block: y = Σ_k w_k · expert_{idx_k}(x) + shared(x).
/// Rows are sorted by expert with a counting sort; each expert runs its SwiGLU as three GEMMs on the rows
/// gathered for it; outputs are combined back per token with the routing weights.
struct MoELayer {
    let layer: Int
    let router: Router
    let experts: [SwiGLUWeights]
    let shared: SwiGLUWeights?
    let cfg: ModelConfig

    init(_ p: ParameterSet, layer: Int, config c: ModelConfig) throws {
        self.layer = layer; cfg = c
        let m = "model.layers.\(layer).mlp."
        router = Router(weight: try p.require(m + "gate.weight", shape: [c.nRoutedExperts, c.hiddenSize]), cfg: c)
        experts = try (0..<c.nRoutedExperts).map {
            try SwiGLUWeights(p, prefix: m + "experts.\($0).", dim: c.hiddenSize, inner: c.moeIntermediateSize)
        }
        shared = c.nSharedExperts > 0
            ? try SwiGLUWeights(p, prefix: m + "shared_experts.", dim: c.hiddenSize, inner: c.moeIntermediateSize * c.nSharedExperts)
            : nil
    }

    /// x_ND is the normed input; out_ND is written. Returns the aux loss (0 when alpha is 0).
    func forward(x: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>, batch: Int, seqLen: Int, auxAlpha: Float,
                 acts: Workspace, scratch ws: Workspace, observer: ((RoutingView) -> Void)?) -> Double {
        let n = batch * seqLen, k = cfg.expertsPerToken, e = cfg.nRoutedExperts, d = cfg.hiddenSize
        let inner = cfg.moeIntermediateSize, rows = n * k
        let probs = acts.floats("moe.probs", n * e), topkIdx = acts.ints("moe.idx", rows)
        let topkProb = acts.floats("moe.p", rows), topkWeight = acts.floats("moe.w", rows)
        router.forward(x: x, n: n, probs: probs, topkIdx: topkIdx, topkProb: topkProb, topkWeight: topkWeight, scratch: ws)
        observer?(RoutingView(layer: layer, tokens: n, k: k, experts: e, topkIdx: topkIdx, topkProb: topkProb))

        let plan = RowPlan(acts: acts, rows: rows, experts: e)
        plan.build(topkIdx: topkIdx, rows: rows, k: k, experts: e)
        let xg = ws.floats("moe.xg", rows * d), yg = ws.floats("moe.yg", rows * d)
        plan.gather(from: x, into: xg, rows: rows, k: k, dim: d)
        let g = acts.floats("moe.g", rows * inner), u = acts.floats("moe.u", rows * inner)
        let a = ws.floats("moe.a", rows * inner)
        for ex in 0..<e {
            let lo = Int(plan.offsets[ex]), cnt = Int(plan.offsets[ex + 1]) - lo
            experts[ex].forward(x: xg + lo * d, n: cnt, g: g + lo * inner, u: u + lo * inner, a: a + lo * inner,
                                y: yg + lo * d, accumulate: false)
        }
        // Combine: out[t] = Σ_j w[t,j] · y[row(t,j)], one token per iteration (no write conflicts).
        parallelChunks(n, grain: 16) { range in
            for t in range {
                let o = out + t * d
                o.update(repeating: 0, count: d)
                for j in 0..<k { axpy(d, topkWeight[t * k + j], yg + Int(plan.slotToRow[t * k + j]) * d, o) }
            }
        }
        if let shared {
            let si = shared.inner
            shared.forward(x: x, n: n, g: acts.floats("moe.sg", n * si), u: acts.floats("moe.su", n * si),
                           a: ws.floats("moe.sa", n * si), y: out, accumulate: true)
        }
        return auxAlpha > 0
            ? router.auxLoss(probs: probs, topkIdx: topkIdx, batch: batch, seqLen: seqLen, alpha: auxAlpha, dProbs: nil)
            : 0
    }

    /// dOut_ND = ∂L/∂out; dx_ND is written with ∂L/∂x (through experts, shared experts and router).
    func backward(dOut: UnsafePointer<Float>, x: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>,
                  batch: Int, seqLen: Int, auxAlpha: Float, acts: Workspace, scratch ws: Workspace) {
        let n = batch * seqLen, k = cfg.expertsPerToken, e = cfg.nRoutedExperts, d = cfg.hiddenSize
        let inner = cfg.moeIntermediateSize, rows = n * k
        let probs = acts.floats("moe.probs", n * e), topkIdx = acts.ints("moe.idx", rows)
        let topkProb = acts.floats("moe.p", rows), topkWeight = acts.floats("moe.w", rows)
        let g = acts.floats("moe.g", rows * inner), u = acts.floats("moe.u", rows * inner)
        let plan = RowPlan(acts: acts, rows: rows, experts: e)

        if let shared {
            let si = shared.inner
            shared.backward(dy: dOut, x: x, n: n, g: acts.floats("moe.sg", n * si), u: acts.floats("moe.su", n * si),
                            dx: dx, accumulateDx: false, scratch: ws)
        } else {
            dx.update(repeating: 0, count: n * d)
        }
        // Rows in expert order: upstream gradient (unweighted), inputs, routing weight per row.
        let dyg = ws.floats("moe.dyg", rows * d), xg = ws.floats("moe.xg", rows * d), dxg = ws.floats("moe.dxg", rows * d)
        let wRow = ws.floats("moe.wrow", rows), dwRow = ws.floats("moe.dwrow", rows)
        plan.gather(from: dOut, into: dyg, rows: rows, k: k, dim: d)
        plan.gather(from: x, into: xg, rows: rows, k: k, dim: d)
        for r in 0..<rows { wRow[r] = topkWeight[Int(plan.rowSlot[r])] }
        for ex in 0..<e {
            let lo = Int(plan.offsets[ex]), cnt = Int(plan.offsets[ex + 1]) - lo
            experts[ex].backward(dy: dyg + lo * d, x: xg + lo * d, n: cnt, g: g + lo * inner, u: u + lo * inner,
                                 rowScale: wRow + lo, dRowScale: dwRow + lo, dx: dxg + lo * d, accumulateDx: false,
                                 scratch: ws)
        }
        parallelChunks(n, grain: 16) { range in
            for t in range {
                for j in 0..<k { axpy(d, 1, dxg + Int(plan.slotToRow[t * k + j]) * d, dx + t * d) }
            }
        }
        // Router: ∂L/∂w per (token, slot), plus the aux loss gradient on the probabilities.
        let dTopk = ws.floats("moe.dtopk", rows)
        for s in 0..<rows { dTopk[s] = dwRow[Int(plan.slotToRow[s])] }
        let dProbs = ws.floats("moe.dprobs", n * e, zeroed: true)
        if auxAlpha > 0 {
            _ = router.auxLoss(probs: probs, topkIdx: topkIdx, batch: batch, seqLen: seqLen, alpha: auxAlpha, dProbs: dProbs)
        }
        router.backward(dTopkWeight: dTopk, x: x, n: n, probs: probs, topkIdx: topkIdx, topkProb: topkProb,
                        dProbs: dProbs, dx: dx, scratch: ws)
    }
}

/// Where each (token, slot) pair goes when rows are grouped by expert: offsets_E+1 (row ranges per expert),
/// rowSlot[row] = token·K + slot, slotToRow[token·K + slot] = row. Within an expert, rows keep token order.
struct RowPlan {
    let offsets: UnsafeMutablePointer<Int32>
    let rowSlot: UnsafeMutablePointer<Int32>
    let slotToRow: UnsafeMutablePointer<Int32>

    init(acts: Workspace, rows: Int, experts: Int) {
        offsets = acts.ints("moe.offsets", experts + 1)
        rowSlot = acts.ints("moe.rowslot", rows)
        slotToRow = acts.ints("moe.slotrow", rows)
    }

    func build(topkIdx: UnsafePointer<Int32>, rows: Int, k: Int, experts: Int) {
        offsets.update(repeating: 0, count: experts + 1)
        for s in 0..<rows { offsets[Int(topkIdx[s]) + 1] += 1 }
        for ex in 0..<experts { offsets[ex + 1] += offsets[ex] }
        var next = Array(UnsafeBufferPointer(start: offsets, count: experts))
        for s in 0..<rows {
            let ex = Int(topkIdx[s]), r = Int(next[ex])
            next[ex] += 1
            rowSlot[r] = Int32(s); slotToRow[s] = Int32(r)
        }
    }

    /// dst[row] = src[token of row], rows of `dim` floats.
    func gather(from src: UnsafePointer<Float>, into dst: UnsafeMutablePointer<Float>, rows: Int, k: Int, dim: Int) {
        parallelChunks(rows, grain: 64) { range in
            for r in range { (dst + r * dim).update(from: src + Int(self.rowSlot[r]) / k * dim, count: dim) }
        }
    }
}

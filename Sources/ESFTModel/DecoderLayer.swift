import ESFTKernels

/// One pre-norm decoder layer: h = x + attn(norm1(x)); out = h + mlp(norm2(h)),
/// where mlp is a dense SwiGLU (the first `first_k_dense_replace` layers) or the MoE block.
struct DecoderLayer {
    enum FeedForward {
        case dense(SwiGLUWeights)
        case moe(MoELayer)
    }

    let index: Int
    let inputNorm: Parameter
    let postAttentionNorm: Parameter
    let attention: Attention
    let feedForward: FeedForward
    let cfg: ModelConfig

    init(_ p: ParameterSet, layer l: Int, config c: ModelConfig, placement: ExpertPlacement, exchange: RowExchange,
         counters: DispatchCounters, balance: SwitchBalance?) throws {
        index = l; cfg = c
        inputNorm = try p.require(.inputNorm(layer: l), shape: [c.hiddenSize])
        postAttentionNorm = try p.require(.postAttentionNorm(layer: l), shape: [c.hiddenSize])
        attention = try Attention(p, layer: l, config: c)
        feedForward = c.isMoELayer(l)
            ? .moe(try MoELayer(p, layer: l, config: c, placement: placement, exchange: exchange, counters: counters, balance: balance))
            : .dense(try SwiGLUWeights(p, { .denseMLP($0, layer: l) }, dim: c.hiddenSize, inner: c.intermediateSize))
    }

    /// Reads x_ND (kept by the caller while backward may need it), writes out_ND. Returns the aux loss.
    func forward(x: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>, batch: Int, seqLen: Int, rope: RopeTables,
                 auxAlpha: Float, auxRows: Int, saved sv: LayerSaved, scratch: Scratch,
                 observer: ((RoutingView) throws -> Void)?) throws -> Double {
        try run(x: x, out: out, batch: batch, seqLen: seqLen, auxAlpha: auxAlpha, auxRows: auxRows, saved: sv, scratch: scratch,
                observer: observer) { xn1, h in
            attention.forward(x: xn1, out: h, batch: batch, seqLen: seqLen, rope: rope, saved: sv.attention, scratch: scratch.attention)
        }
    }

    /// Incremental decoding: `rows` new tokens (the spans' rows) attend over `cache` and join it; the
    /// feed-forward sees them as `rows` sequences of one token (no aux loss at inference).
    func decode(x: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>, rows: Int, spans: [DecodeSpan], cache: LayerKVCache,
                rope: RopeTables, saved sv: LayerSaved, scratch: Scratch) throws {
        _ = try run(x: x, out: out, batch: rows, seqLen: 1, auxAlpha: 0, auxRows: rows, saved: sv, scratch: scratch,
                    observer: nil) { xn1, h in
            attention.decode(x: xn1, out: h, rows: rows, spans: spans, cache: cache, rope: rope, saved: sv.attention,
                             scratch: scratch.attention)
        }
    }

    private func run(x: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>, batch: Int, seqLen: Int,
                     auxAlpha: Float, auxRows: Int, saved sv: LayerSaved, scratch: Scratch,
                     observer: ((RoutingView) throws -> Void)?,
                     attend: (UnsafePointer<Float>, UnsafeMutablePointer<Float>) -> Void) throws -> Double {
        let n = batch * seqLen, d = cfg.hiddenSize
        let xn1 = sv.normed1_ND.reuse(count: n * d), h = sv.hidden_ND.reuse(count: n * d), xn2 = sv.normed2_ND.reuse(count: n * d)
        RMSNorm.forward(x: x, weight: inputNorm.value, eps: cfg.rmsNormEps, y: xn1, rstd: sv.rstd1_N.reuse(count: n),
                        rows: n, dim: d)
        attend(xn1, h)
        axpy(n * d, 1, x, h)
        RMSNorm.forward(x: h, weight: postAttentionNorm.value, eps: cfg.rmsNormEps, y: xn2, rstd: sv.rstd2_N.reuse(count: n),
                        rows: n, dim: d)
        var aux = 0.0
        switch feedForward {
        case .dense(let mlp):
            let (g, u) = mlp.saved(sv.dense, rows: n)
            mlp.forward(x: xn2, n: n, g: g, u: u, a: scratch.swiglu.act_NI.reuse(count: n * mlp.inner), y: out, accumulate: false)
        case .moe(let moe):
            aux = try moe.forward(x: xn2, out: out, batch: batch, seqLen: seqLen, auxAlpha: auxAlpha, auxRows: auxRows,
                                  saved: sv.moe, scratch: scratch, observer: observer)
        }
        axpy(n * d, 1, h, out)
        return aux
    }

    /// In place: dHidden holds ∂L/∂out on entry and ∂L/∂x on return (only partially, through the residual,
    /// when `needInputGrad` is false: the lowest layer with nothing trainable below it).
    func backward(dHidden: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, batch: Int, seqLen: Int, rope: RopeTables,
                  auxAlpha: Float, auxRows: Int, needInputGrad: Bool, saved sv: LayerSaved, scratch ws: Scratch) throws {
        let n = batch * seqLen, d = cfg.hiddenSize
        let xn1 = sv.normed1_ND.reuse(count: n * d), h = sv.hidden_ND.reuse(count: n * d), xn2 = sv.normed2_ND.reuse(count: n * d)
        let dxn = ws.dNormed_ND.reuse(count: n * d)
        switch feedForward {
        case .dense(let mlp):
            let (g, u) = mlp.saved(sv.dense, rows: n)
            mlp.backward(dy: dHidden, x: xn2, n: n, g: g, u: u, dx: dxn, accumulateDx: false, scratch: ws.swiglu)
        case .moe(let moe):
            try moe.backward(dOut: dHidden, x: xn2, dx: dxn, batch: batch, seqLen: seqLen, auxAlpha: auxAlpha,
                             auxRows: auxRows, saved: sv.moe, scratch: ws)
        }
        RMSNorm.backward(dy: dxn, x: h, weight: postAttentionNorm.value, rstd: sv.rstd2_N.reuse(count: n), dx: dHidden,
                         dWeight: postAttentionNorm.gradPointer, rows: n, dim: d, accumulate: true)
        // Below here nothing is needed when the layer input needs no gradient and attention is frozen
        // (the lowest layer of an expert-only run): skip attention's backward entirely.
        guard needInputGrad || inputNorm.isTrainable || attention.hasTrainable else { return }
        attention.backward(dOut: dHidden, x: xn1, dx: needInputGrad || inputNorm.isTrainable ? dxn : nil,
                           batch: batch, seqLen: seqLen, rope: rope, saved: sv.attention, scratch: ws.attention)
        if needInputGrad || inputNorm.isTrainable {
            RMSNorm.backward(dy: dxn, x: x, weight: inputNorm.value, rstd: sv.rstd1_N.reuse(count: n),
                             dx: needInputGrad ? dHidden : nil, dWeight: inputNorm.gradPointer, rows: n, dim: d,
                             accumulate: true)
        }
    }
}

/// What one decoder layer keeps for backward: its input, the normed activations and their rstd, the
/// attention output plus residual (h), and its sublayers' saved state (dense or MoE: only one is used).
final class LayerSaved: ReusableGroup {
    let input_ND = Reusable<Float>()
    let normed1_ND = Reusable<Float>(), rstd1_N = Reusable<Float>(), hidden_ND = Reusable<Float>()
    let normed2_ND = Reusable<Float>(), rstd2_N = Reusable<Float>()
    let attention = AttentionSaved()
    let dense = SwiGLUSaved()
    let moe = MoESaved()
}

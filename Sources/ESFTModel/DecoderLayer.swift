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
    let attention: MLAttention
    let feedForward: FeedForward
    let cfg: ModelConfig

    init(_ p: ParameterSet, layer l: Int, config c: ModelConfig, placement: ExpertPlacement, exchange: RowExchange,
         counters: DispatchCounters) throws {
        index = l; cfg = c
        inputNorm = try p.require(.inputNorm(layer: l), shape: [c.hiddenSize])
        postAttentionNorm = try p.require(.postAttentionNorm(layer: l), shape: [c.hiddenSize])
        attention = try MLAttention(p, layer: l, config: c)
        feedForward = c.isMoELayer(l)
            ? .moe(try MoELayer(p, layer: l, config: c, placement: placement, exchange: exchange, counters: counters))
            : .dense(try SwiGLUWeights(p, { .denseMLP($0, layer: l) }, dim: c.hiddenSize, inner: c.intermediateSize))
    }

    /// Reads x_ND (kept by the caller while backward may need it), writes out_ND. Returns the aux loss.
    func forward(x: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>, batch: Int, seqLen: Int, rope: RopeTables,
                 auxAlpha: Float, auxRows: Int, acts: Workspace, scratch: Workspace,
                 observer: ((RoutingView) throws -> Void)?) throws -> Double {
        let n = batch * seqLen, d = cfg.hiddenSize
        let xn1 = acts.floats("xn1", n * d), h = acts.floats("h", n * d), xn2 = acts.floats("xn2", n * d)
        RMSNorm.forward(x: x, weight: inputNorm.value, eps: cfg.rmsNormEps, y: xn1, rstd: acts.floats("rstd1", n),
                        rows: n, dim: d)
        attention.forward(x: xn1, out: h, batch: batch, seqLen: seqLen, rope: rope, acts: acts, scratch: scratch)
        axpy(n * d, 1, x, h)
        RMSNorm.forward(x: h, weight: postAttentionNorm.value, eps: cfg.rmsNormEps, y: xn2, rstd: acts.floats("rstd2", n),
                        rows: n, dim: d)
        var aux = 0.0
        switch feedForward {
        case .dense(let mlp):
            mlp.forward(x: xn2, n: n, g: acts.floats("mlp.g", n * mlp.inner), u: acts.floats("mlp.u", n * mlp.inner),
                        a: scratch.floats("mlp.a", n * mlp.inner), y: out, accumulate: false)
        case .moe(let moe):
            aux = try moe.forward(x: xn2, out: out, batch: batch, seqLen: seqLen, auxAlpha: auxAlpha, auxRows: auxRows,
                                  acts: acts, scratch: scratch, observer: observer)
        }
        axpy(n * d, 1, h, out)
        return aux
    }

    /// In place: dHidden holds ∂L/∂out on entry and ∂L/∂x on return (only partially, through the residual,
    /// when `needInputGrad` is false: the lowest layer with nothing trainable below it).
    func backward(dHidden: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, batch: Int, seqLen: Int, rope: RopeTables,
                  auxAlpha: Float, auxRows: Int, needInputGrad: Bool, acts: Workspace, scratch ws: Workspace) throws {
        let n = batch * seqLen, d = cfg.hiddenSize
        let xn1 = acts.floats("xn1", n * d), h = acts.floats("h", n * d), xn2 = acts.floats("xn2", n * d)
        let dxn = ws.floats("layer.dxn", n * d)
        switch feedForward {
        case .dense(let mlp):
            mlp.backward(dy: dHidden, x: xn2, n: n, g: acts.floats("mlp.g", n * mlp.inner),
                         u: acts.floats("mlp.u", n * mlp.inner), dx: dxn, accumulateDx: false, scratch: ws)
        case .moe(let moe):
            try moe.backward(dOut: dHidden, x: xn2, dx: dxn, batch: batch, seqLen: seqLen, auxAlpha: auxAlpha,
                             auxRows: auxRows, acts: acts, scratch: ws)
        }
        RMSNorm.backward(dy: dxn, x: h, weight: postAttentionNorm.value, rstd: acts.floats("rstd2", n), dx: dHidden,
                         dWeight: postAttentionNorm.gradPointer, rows: n, dim: d, accumulate: true, workspace: ws)
        // Below here nothing is needed when the layer input needs no gradient and attention is frozen
        // (the lowest layer of an expert-only run): skip attention's backward entirely.
        guard needInputGrad || inputNorm.isTrainable || attention.hasTrainable else { return }
        attention.backward(dOut: dHidden, x: xn1, dx: needInputGrad || inputNorm.isTrainable ? dxn : nil,
                           batch: batch, seqLen: seqLen, rope: rope, acts: acts, scratch: ws)
        if needInputGrad || inputNorm.isTrainable {
            RMSNorm.backward(dy: dxn, x: x, weight: inputNorm.value, rstd: acts.floats("rstd1", n),
                             dx: needInputGrad ? dHidden : nil, dWeight: inputNorm.gradPointer, rows: n, dim: d,
                             accumulate: true, workspace: ws)
        }
    }
}

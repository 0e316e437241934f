import ESFTKernels

// Forward and backward meet through typed state, one named property per buffer: what forward keeps for
// backward (`…Saved`: `LayerSaved` per decoder layer, `HeadSaved` for the final norm, head and loss) and
// temporaries that live within one call (`Scratch`, shared by every layer). Each buffer is a grow-only
// `Reusable`: sized on first use, reused afterwards, so steady-state steps allocate nothing. Suffixes
// give shapes: N rows (B·T tokens), D hidden, V vocabulary, T sequence length.

/// What the head keeps between forward and backward: the last layer's output, its norm, the logits and
/// ∂loss/∂logits (computed with the loss in forward).
final class HeadSaved: ReusableGroup {
    let finalInput_ND = Reusable<Float>(), finalNormed_ND = Reusable<Float>(), finalRstd_N = Reusable<Float>()
    let logits_NV = Reusable<Float>(), dLogits_NV = Reusable<Float>()
}

/// Temporaries of one forward or backward call, by the layer that uses them; nothing here outlives the
/// call that wrote it.
final class Scratch: ReusableGroup {
    let attention = AttentionScratch()
    let swiglu = SwiGLUScratch()
    let router = RouterScratch()
    let dispatch = DispatchScratch()
    /// Qwen2-MoE's gated shared expert: its output before the gate scales it, and ∂L/∂(gate value).
    let sharedOut_ND = Reusable<Float>(), dSharedScale_N = Reusable<Float>()
    /// ∂L/∂(a decoder layer's normed input), first of its feed-forward, then of its attention.
    let dNormed_ND = Reusable<Float>()
    let dFinalNormed_ND = Reusable<Float>(), dHidden_ND = Reusable<Float>()
    /// Experts run side by side (`ExpertWorkers`): worker 0 uses `swiglu`, the others one set each.
    private(set) var moreExpertWorkers: [SwiGLUScratch] = []

    /// Sizes SwiGLU backward scratch for `workers` workers to `rows` rows of `inner` (the layer's largest
    /// expert) before they start, so a worker never grows a buffer another could be reading.
    func reserveExpertWorkers(_ workers: Int, rows: Int, inner: Int) {
        while moreExpertWorkers.count < workers - 1 { moreExpertWorkers.append(SwiGLUScratch()) }
        for w in 0..<workers {
            let s = expertWorker(w)
            _ = s.act_NI.reuse(count: rows * inner); _ = s.dAct_NI.reuse(count: rows * inner)
            _ = s.dGate_NI.reuse(count: rows * inner); _ = s.dUp_NI.reuse(count: rows * inner)
        }
    }

    func expertWorker(_ w: Int) -> SwiGLUScratch { w == 0 ? swiglu : moreExpertWorkers[w - 1] }
}

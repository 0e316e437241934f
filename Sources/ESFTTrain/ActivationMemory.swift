import ESFTModel

/// The bytes a rank's model holds in grow-only buffers after training steps (`MoETransformer
/// .activationBytes`), predicted from shapes: every `Reusable` of LayerSaved, HeadSaved and Scratch with
/// the count it is sized to (see SavedState.swift, Attention.swift, MoE.swift, MoEPlans.swift). Keep in
/// step with those files; `ActivationMemoryTests` compares this with a real model's buffers.
public struct ActivationMemory: Equatable {
    /// Per MoE layer and rank, per micro-batch: rows this rank sends (S, one per (token, owner rank),
    /// itself included), receives (M), (row, slot) assignments to its experts (A), and the most rows one
    /// of its experts gets.
    public struct Dispatch: Equatable {
        public var sent: Double, received: Double, assignments: Double, maxExpertRows: Double
        public init(sent: Double, received: Double, assignments: Double, maxExpertRows: Double) {
            self.sent = sent; self.received = received; self.assignments = assignments; self.maxExpertRows = maxExpertRows
        }
    }

    /// Kept between forward and backward: layers from the lowest trainable one up, the head.
    public var saved = 0.0
    /// Temporaries of one call, shared by all layers (the largest use of each buffer).
    public var workspace = 0.0

    /// n = this rank's tokens per micro-batch (rows × T); `lowest` = the job's lowest trainable layer;
    /// `dispatch[layer]` for each MoE layer; `localExperts[layer]` = experts this rank owns there.
    /// `recompute`: activation checkpointing (`MoETransformer.recomputeLayers`): trained layers keep their
    /// input only and share the frozen layers' set. `threads`: the rank's `--threads` (with OpenBLAS, experts
    /// run side by side in backward with one SwiGLU scratch set per worker, `ExpertWorkers`; with oneDNN
    /// they run one at a time and this overstates by the extra workers' sets).
    public init(config c: ModelConfig, tokens n: Int, seqLen t: Int, ranks: Int, threads: Int, lowest: Int, validation: Bool,
                recompute: Bool = false, attentionBackward: (Int) -> Bool, dispatch: [Int: Dispatch], localExperts: [Int: Int]) {
        let d = Double(c.hiddenSize), nn = Double(n), k = Double(c.expertsPerToken), e = Double(c.nRoutedExperts)
        let v = Double(c.vocabSize)
        let iDense = Double(c.intermediateSize), iMoE = Double(c.moeIntermediateSize), iShared = Double(c.sharedExperts.width)
        let gatedShared = { if case .gated = c.sharedExperts { return true } else { return false } }()
        let kr = min(k, Double(ranks))
        // Every buffer holds max(count, 1) elements of 4 bytes (Float or Int32).
        func b(_ count: Double) -> Double { 4 * max(count.rounded(.up), 1) }

        func attentionSaved() -> Double { c.attention.savedBytes(tokens: nn, b) }
        func moeSaved(_ x: Dispatch, local: Int) -> Double {
            let m = x.received, a = x.assignments
            return b(nn * e) + 3 * b(nn * k) + (iShared > 0 ? 2 * b(nn * iShared) : 0) + (gatedShared ? b(nn) : 0)
                + b(2 * Double(ranks)) + 2 * b(nn * kr) + b(nn + 1)                         // source plan
                + b(Double(local) + 1) + 4 * b(m * k) + b(m + 1) + b(m * (d + k))          // owner plan, received rows
                + 2 * b(a * iMoE)                                                          // experts' gate, up
        }
        func layerSaved(_ l: Int, input: Bool) -> Double {
            var s = (input ? b(nn * d) : 0) + 3 * b(nn * d) + 2 * b(nn) + attentionSaved()
            if c.isMoELayer(l), let x = dispatch[l] { s += moeSaved(x, local: localExperts[l] ?? 0) } else { s += 2 * b(nn * iDense) }
            return s
        }
        let layers = 0..<c.numLayers
        // Layers at or above `lowest` keep their own state; the others (and validation) share one set,
        // sized by the largest use: dense and MoE parts both when both kinds run there.
        for l in layers where l >= lowest { saved += recompute ? b(nn * d) : layerSaved(l, input: true) }
        if recompute && lowest < c.numLayers { saved += b(nn * d) }                        // the recomputed layer's output
        let below = layers.filter { $0 < lowest || validation || recompute }
        if !below.isEmpty {
            let dense = below.filter { !c.isMoELayer($0) }, moe = below.filter { c.isMoELayer($0) }
            saved += 3 * b(nn * d) + 2 * b(nn) + attentionSaved() + (dense.isEmpty ? 0 : 2 * b(nn * iDense))
            if let worst = moe.compactMap({ dispatch[$0] }).max(by: { $0.received < $1.received }) {
                saved += moeSaved(worst, local: moe.compactMap { localExperts[$0] }.max() ?? 0)
            }
        }
        saved += Double(min(lowest, 2)) * b(nn * d)                                       // inputs of the layers below
        // Head: input, normed, rstd, one chunk of logits and (training) of their gradient.
        let chunkRows = max(1, min(nn, Double(MoETransformer.headChunkBytes / (4 * c.vocabSize))))
        saved += 2 * b(nn * d) + b(nn) + b(chunkRows * v) + b(chunkRows * v)

        // Workspaces: the largest use over the layers that run them.
        let trained = layers.filter { $0 >= lowest }
        let attnBack = trained.contains(where: attentionBackward)
        workspace += 2 * b(Double(t * t)) + b(Double(t))                                  // scores, ∂scores, row dots
        if attnBack { workspace += c.attention.backwardWorkspaceBytes(tokens: nn, b) }
        let moeLayers = c.moeLayers, all = moeLayers.compactMap { dispatch[$0] }
        let maxA = all.map(\.assignments).max() ?? 0, maxM = all.map(\.received).max() ?? 0, maxS = all.map(\.sent).max() ?? 0
        let maxExpert = all.map(\.maxExpertRows).max() ?? 0
        let denseBack = trained.contains { !c.isMoELayer($0) }, moeBack = trained.contains { c.isMoELayer($0) }
        let act = max(nn * iDense, nn * iShared, maxA * iMoE)
        let back = max(denseBack ? nn * iDense : 0, moeBack ? max(nn * iShared, maxExpert * iMoE) : 0)
        workspace += b(act) + (denseBack || moeBack ? 3 * b(back) : 0)                      // SwiGLU act, ∂act, ∂gate, ∂up
        if gatedShared && !moeLayers.isEmpty { workspace += b(nn * d) + (moeBack ? b(nn) : 0) }  // gated shared output, ∂gate value
        // Experts' backward side by side: worker w ≥ 1 has its own four buffers, sized by the largest expert
        // of each trained MoE layer with more than w workers (`Scratch.reserveExpertWorkers`).
        let workersOf = { (l: Int) -> Int in let e = localExperts[l] ?? 0; return e >= 2 ? min(threads, e) : 1 }
        for w in 1..<max(threads, 1) {
            let rows = trained.filter { c.isMoELayer($0) && workersOf($0) > w }.compactMap { dispatch[$0]?.maxExpertRows }.max()
            if let rows { workspace += 4 * b(rows * iMoE) }
        }
        if !moeLayers.isEmpty {
            workspace += b(nn * e) + (moeBack ? b(nn * k) + 2 * b(nn * e) : 0)              // router logits; ∂weights, ∂probs, ∂logits
            workspace += b(maxS * (d + k)) + b(nn * kr * k) + b(maxM * k) + 2 * b(maxA * d) // send, slots, gathered, expert out
                + b(maxM * d) + b(maxS * d)                                                 // combined, returned
            if moeBack {
                workspace += b(maxS * d) + b(maxM * d) + 2 * b(maxA * d) + b(maxA)          // ∂send, ∂received, ∂expert out, ∂gathered, ∂weight
                    + b(maxM * (d + k)) + b(maxS * (d + k))                                 // ∂combined, ∂returned
            }
        }
        workspace += 3 * b(nn * d)                                                          // ∂normed, ∂final normed, ∂hidden
    }

    public var total: Double { saved + workspace }
}

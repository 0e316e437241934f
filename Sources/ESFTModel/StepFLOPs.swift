/// The floating-point operations one training step of the model needs, counted from shapes: the model FLOPs
/// that utilisation (MFU) is stated in (docs/performance.md). A product of an [n, in] input with an [in, out]
/// weight is 2·n·in·out. Forward: every projection of every layer, causal attention (QKᵀ and PV over the
/// T(T+1)/2 visible pairs of each row), each token's K routed experts and the shared ones, the head.
/// Backward, for the layers from the lowest trainable one up and the head: the input gradient of every
/// product (the same FLOPs as forward; attention's core twice, for ∂Q, ∂K and ∂V, ∂P), and the weight
/// gradient of the trainable weights only (a frozen weight needs none: ESFT's saving). A trainable routed
/// expert is counted with the mean rows an expert gets, n·K/E. What is not counted, as MFU conventions do
/// not: elementwise work (norms, RoPE, softmax, SwiGLU), the optimizer, recomputed forwards (--recompute).
public struct StepFLOPs: Equatable, Sendable {
    public var forward = 0.0
    public var backward = 0.0
    public var total: Double { forward + backward }

    /// `tokens` = rows × `seqLen` of one micro-batch on all ranks together; `trainable` says which tensors train.
    public init(config c: ModelConfig, tokens n: Int, seqLen t: Int, trainable: (ParameterID) -> Bool) {
        let nn = Double(n), rows = Double(n / max(t, 1)), d = Double(c.hiddenSize)
        let k = Double(c.expertsPerToken), e = Double(c.nRoutedExperts), im = Double(c.moeIntermediateSize)
        let trained = c.parameterSpecs().map(\.id).filter(trainable)
        let lowest = TrainableSet(trained).lowestLayer(numLayers: c.numLayers)
        let attentionTrains = Set(trained.compactMap { id -> Int? in if case .attention = id.kind { return id.layer } else { return nil } })
        let inputNormTrains = Set(trained.compactMap { id -> Int? in if case .inputNorm = id.kind { return id.layer } else { return nil } })
        let embedTrains = trainable(.embedTokens)
        let pairs = rows * Double(t) * Double(t + 1) / 2

        // One product: forward always; in backward (layer at or above `lowest`) ∂input, and ∂weight if trainable.
        func product(_ tokens: Double, _ inDim: Double, _ outDim: Double, _ id: ParameterID?, layer: Int?, inputGrad: Bool = true) {
            let f = 2 * tokens * inDim * outDim
            forward += f
            guard (layer ?? c.numLayers) >= lowest else { return }
            if inputGrad { backward += f }
            if let id, trainable(id) { backward += f }
        }
        func mlp(_ tokens: Double, inner: Double, _ id: (ParameterID.Projection) -> ParameterID, layer l: Int) {
            product(tokens, d, inner, id(.gate), layer: l); product(tokens, d, inner, id(.up), layer: l)
            product(tokens, inner, d, id(.down), layer: l)
        }
        for l in 0..<c.numLayers {
            // As DecoderLayer.backward: at the lowest trained layer attention's backward runs only when the layer's
            // input needs a gradient (the embedding trains), its input norm trains, or attention itself trains; the
            // first projections' ∂input only when the input norm or the layer's input needs it.
            let inputGrad = l > lowest || (l == lowest && embedTrains) || inputNormTrains.contains(l)
            let attnGrad = inputGrad || attentionTrains.contains(l)
            for p in c.attention.projections(hidden: d) {
                product(nn, p.inDim, p.outDim, .attention(p.tensor, layer: l), layer: l, inputGrad: p.first ? inputGrad : attnGrad)
            }
            let core = pairs * c.attention.coreFLOPsPerPair
            forward += core
            if l >= lowest && attnGrad { backward += 2 * core }
            if c.isMoELayer(l) {
                product(nn, d, e, .router(layer: l), layer: l)
                if c.sharedExperts.width > 0 { mlp(nn, inner: Double(c.sharedExperts.width), { .sharedExperts($0, layer: l) }, layer: l) }
                if case .gated = c.sharedExperts { product(nn, d, 1, .sharedExpertGate(layer: l), layer: l) }
                // Routed experts: n·K rows in all; ∂input for all of them, ∂weight for the trainable experts' share.
                let perExpert = nn * k / e
                for x in 0..<c.nRoutedExperts { mlp(perExpert, inner: im, { .routedExpert($0, layer: l, expert: x) }, layer: l) }
            } else {
                mlp(nn, inner: Double(c.intermediateSize), { .denseMLP($0, layer: l) }, layer: l)
            }
        }
        // The head's ∂input feeds the layers or a trainable final norm; a tied head's weight gradient is the embedding's.
        let headInputGrad = lowest < c.numLayers || trainable(.finalNorm)
        let headForward = 2 * nn * d * Double(c.vocabSize)
        forward += headForward
        if headInputGrad { backward += headForward }
        if trainable(.lmHead) || (c.tieWordEmbeddings && embedTrains) { backward += headForward }
    }
}

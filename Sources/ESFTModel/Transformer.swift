import ESFTKernels
import Foundation

/// A batch of B rows of T tokens with labels in Hugging Face's convention: same shape as the inputs,
/// the logits at t are scored against labels[t+1], and -100 is ignored.
public struct TokenBatch {
    public let batch: Int
    public let seqLen: Int
    public let inputIds: [Int32]
    public let labels: [Int32]

    public init(batch: Int, seqLen: Int, inputIds: [Int32], labels: [Int32]) {
        // Invariant: batches are cut from datasets and token files whose shapes were checked on reading.
        precondition(inputIds.count == batch * seqLen && labels.count == batch * seqLen)
        self.batch = batch; self.seqLen = seqLen; self.inputIds = inputIds; self.labels = labels
    }

    /// Shifted targets: targets[b,t] = labels[b,t+1], and -100 at each row's last position.
    public var targets: [Int32] {
        var out = [Int32](repeating: CrossEntropy.ignoreIndex, count: labels.count)
        for b in 0..<batch { for t in 0..<(seqLen - 1) { out[b * seqLen + t] = labels[b * seqLen + t + 1] } }
        return out
    }
    public var targetCount: Int { targets.reduce(0) { $0 + ($1 == CrossEntropy.ignoreIndex ? 0 : 1) } }
    /// Rows holding at least one target: what a row-normalised loss averages over.
    public var rowsWithTargets: Int { targetsPerRow.lazy.filter { $0 > 0 }.count }
    /// Targets in each row (a row with none adds nothing to a row-normalised loss).
    public var targetsPerRow: [Int] {
        let t = targets
        return (0..<batch).map { b in t[(b * seqLen)..<((b + 1) * seqLen)].reduce(0) { $0 + ($1 == CrossEntropy.ignoreIndex ? 0 : 1) } }
    }
}

/// How a batch's cross-entropy terms are averaged: over target tokens (every token weighs the same), or per
/// row first and then over rows (every row weighs the same, however many targets it has: the ESFT reference,
/// whose loss is the mean over a row's tokens, one row per device, averaged over devices and accumulation).
public enum LossNormalization: String, Sendable, CaseIterable { case tokens, rows }

public struct ForwardResult {
    /// The loss this batch contributes: crossEntropySum / lossDenominator (tokens), or the sum of each row's
    /// mean over lossDenominator (rows).
    public let loss: Double
    public let crossEntropySum: Double
    public let targetCount: Int
    /// DeepSeek sequence-level balance loss summed over MoE layers (already times alpha; 0 when alpha is 0).
    public let auxLoss: Double
}

/// A decoder-only MoE transformer of any supported family (config.family) on CPU: forward, and backward
/// into the gradients of trainable parameters only. (Today's layers are DeepSeek-V2's; the attention and
/// router variants of the other families join through the family seam, issue 26.)
/// Activations are kept only for layers at or above the lowest one holding a trainable tensor; the layers
/// below run through one shared scratch set. Buffers are sized on first use and reused afterwards.
public final class MoETransformer {
    public let config: ModelConfig
    public let parameters: ParameterSet
    /// Weight of the family's auxiliary balance loss (0: off, as for HF parity): DeepSeek's sequence-level one, or
    /// the switch-style one of Qwen, OLMoE and Mixtral (`config.balanceLoss`).
    public var auxLossAlpha: Float = 0
    /// The switch-style loss's statistics, for families that define it.
    let balance: SwitchBalance?
    /// Called during forward with each MoE layer's routing (relevance scoring listens here); an error it
    /// throws ends the forward.
    public var routingObserver: ((RoutingView) throws -> Void)?
    /// Rows the aux loss averages over: the global batch when ranks split it (default: this batch).
    public var auxLossRows: Int?
    /// Which rank owns which routed experts, and how rows move between ranks (one rank: a copy).
    public let placement: ExpertPlacement
    public let exchange: RowExchange
    /// Rows moved by expert-parallel dispatch, per MoE layer (reset by the caller, e.g. per step).
    public let dispatchCounters = DispatchCounters()

    let embed: Parameter
    let finalNorm: Parameter
    let lmHead: Parameter
    let layers: [DecoderLayer]
    let rope: RoPE

    private let layerSaved: [LayerSaved]
    private let belowSaved = LayerSaved()   // shared by the layers that need no backward
    private let belowInputs = [Reusable<Float>(), Reusable<Float>()]  // their inputs, ping-pong
    private let recomputedOut = Reusable<Float>()  // a recomputed layer's output, not needed by its backward
    private let head = HeadSaved()
    let scratch = Scratch()  // internal: tests poison its buffers
    private var ropeCos = FloatBuffer(count: 0), ropeSin = FloatBuffer(count: 0), ropeLength = 0
    private var pending: (batch: TokenBatch, lowest: Int, recompute: Bool)?

    /// With expert parallelism, `parameters` holds only this rank's routed experts (see `placement`).
    public init(config: ModelConfig, parameters: ParameterSet, placement: ExpertPlacement? = nil,
                exchange: RowExchange = LocalExchange()) throws {
        self.config = config; self.parameters = parameters
        self.placement = placement ?? .single(experts: config.nRoutedExperts)
        self.exchange = exchange
        if case .switchPooled = config.balanceLoss, config.nRoutedExperts > 0 {
            balance = SwitchBalance(experts: config.nRoutedExperts)
        } else {
            balance = nil
        }
        guard self.placement.ranks == exchange.ranks else {
            throw ESFTError("expert placement over \(self.placement.ranks) ranks, but the exchange has \(exchange.ranks)")
        }
        let d = config.hiddenSize
        embed = try parameters.require(.embedTokens, shape: [config.vocabSize, d])
        finalNorm = try parameters.require(.finalNorm, shape: [d])
        lmHead = config.tieWordEmbeddings ? embed : try parameters.require(.lmHead, shape: [config.vocabSize, d])
        let placement = self.placement, counters = dispatchCounters, balance = self.balance
        layers = try (0..<config.numLayers).map {
            try DecoderLayer(parameters, layer: $0, config: config, placement: placement, exchange: exchange, counters: counters,
                             balance: balance)
        }
        rope = RoPE(config: config)
        layerSaved = (0..<config.numLayers).map { _ in LayerSaved() }
    }

    /// Rows per causal attention block (default 256): blocks skip the masked upper triangle. A knob for
    /// tests and tuning; results do not depend on it beyond rounding.
    public static var attentionBlockRows: Int {
        get { Attention.causalBlockRows }
        set { Attention.causalBlockRows = max(1, newValue) }
    }

    /// Index of the lowest layer that backward must reach; numLayers when only the head trains.
    /// With expert parallelism, backward crosses every rank's MoE layers together (their exchanges are
    /// collectives), so the trainer sets `jobLowestTrainableLayer` from the whole job's trainable set: a rank
    /// that owns no trainable expert in a layer still passes gradients through its frozen experts there.
    public var lowestTrainableLayer: Int {
        if embed.isTrainable { return 0 }
        let local = parameters.trainable.compactMap(\.id.layer).min() ?? config.numLayers
        return min(local, jobLowestTrainableLayer ?? local)
    }
    public var jobLowestTrainableLayer: Int?

    /// Activation checkpointing: training keeps only each layer's input [B·T, D] and runs the layer's forward
    /// again (into the shared set the frozen layers use) just before its backward, so one layer's activations
    /// are held at a time instead of every trained layer's: one more forward of the trained layers per step
    /// (and, with expert parallelism, its dispatch and combine again) for memory. The recomputed forward
    /// repeats the first one's operations on the same input, so the gradients are the same.
    public var recomputeLayers = false

    /// Rows of logits the head computes at once (nil: as many as fit `headChunkBytes`). A forward whose B·T
    /// rows fit in one chunk keeps all its logits for `logits(count:)` (esft forward sets B·T to keep them).
    public var headChunkRows: Int?
    /// Bytes of one chunk's logits (and again of their gradient, training): 256 MiB, 640 rows of a 102,400 vocabulary.
    public static let headChunkBytes = 256 << 20
    private var keptLogitRows = 0

    /// Logits [B·T, V] of the last forward (only when it ran the head in one chunk).
    public func logits(count: Int) -> UnsafeBufferPointer<Float> {
        // Invariant: the callers (forward command, generation, eval, tests) ask for at most the rows they just ran.
        precondition(count <= keptLogitRows * config.vocabSize, "the last forward kept \(keptLogitRows) rows of logits; set headChunkRows to keep them all")
        return UnsafeBufferPointer(start: head.logits_NV.reuse(count: count), count: count)
    }

    /// Runs the model. With `training`, keeps what backward needs and computes ∂loss/∂logits with
    /// `lossDenominator` (default: this batch's target count, or with `.rows` its count of rows holding a target;
    /// pass the global count across ranks and micro-batches).
    public func forward(_ batch: TokenBatch, training: Bool, lossDenominator: Double? = nil,
                        normalization: LossNormalization = .tokens) throws -> ForwardResult {
        let n = batch.batch * batch.seqLen, d = config.hiddenSize, v = config.vocabSize
        try checkInputIds(batch)
        for (i, l) in batch.labels.enumerated() where l != CrossEntropy.ignoreIndex && (l < 0 || Int(l) >= v) {
            throw ESFTError("label \(l) at row \(i / batch.seqLen), position \(i % batch.seqLen) is outside the vocabulary (vocab_size \(v)) and is not -100")
        }
        let lowest = training ? lowestTrainableLayer : config.numLayers + 1
        let aux = try runLayers(batch, lowest: lowest)
        let xf = head.finalInput_ND.reuse(count: n * d), fn = head.finalNormed_ND.reuse(count: n * d)
        RMSNorm.forward(x: xf, weight: finalNorm.value, eps: config.rmsNormEps, y: fn, rstd: head.finalRstd_N.reuse(count: n),
                        rows: n, dim: d)
        // The head and its loss run chunk by chunk, each chunk's backward right away (training), so the
        // [B·T, V] logits never exist at once: only [C, V] logits and their gradient, and ∂L/∂(normed) [N, D].
        let chunk = max(1, min(n, headChunkRows ?? Self.headChunkBytes / (4 * v)))  // n is 0 for an empty share
        let needDx = training && (lowest < config.numLayers || finalNorm.isTrainable)
        let dfn = needDx ? scratch.dFinalNormed_ND.reuse(count: n * d) : nil
        let targets = batch.targets, count = batch.targetCount
        var rowDenominators: [Double] = [], denominator = 1.0
        switch normalization {
        case .tokens: denominator = lossDenominator ?? Double(max(count, 1))
        case .rows:
            let perRow = batch.targetsPerRow
            let rows = lossDenominator ?? Double(max(perRow.lazy.filter { $0 > 0 }.count, 1))  // rowsWithTargets, from the counts at hand
            rowDenominators = perRow.map { Double(max($0, 1)) * rows }
        }
        var ceSum = 0.0, loss = 0.0
        for c0 in stride(from: 0, to: n, by: chunk) {
            let rows = min(chunk, n - c0)
            let logits = head.logits_NV.reuse(count: rows * v), dLogits = training ? head.dLogits_NV.reuse(count: rows * v) : nil
            Linear.forward(x: fn + c0 * d, weight: lmHead.weight, bias: nil, y: logits, n: rows, inDim: d, outDim: v)
            targets.withUnsafeBufferPointer { t in
                switch normalization {
                case .tokens:
                    let sum = CrossEntropy.forwardBackward(logits: logits, targets: t.baseAddress! + c0, rows: rows, vocab: v,
                                                           denominator: denominator, dLogits: dLogits)
                    ceSum += sum; loss += sum / denominator
                case .rows:
                    let (sum, weighted) = CrossEntropy.forwardBackward(logits: logits, targets: t.baseAddress! + c0, rows: rows, vocab: v,
                                                                       rowLength: batch.seqLen, rowOffset: c0,
                                                                       denominators: rowDenominators, dLogits: dLogits)
                    ceSum += sum; loss += weighted
                }
            }
            if let dLogits {
                Linear.backward(dy: dLogits, x: fn + c0 * d, weight: lmHead.weight, dx: dfn.map { $0 + c0 * d },
                                dWeight: lmHead.gradPointer, dBias: nil, n: rows, inDim: d, outDim: v)
            }
        }
        keptLogitRows = chunk >= n ? n : 0
        pending = training ? (batch, lowest, recomputeLayers) : nil
        // One chunk: the same sums as before chunking (loss = ceSum / denominator exactly).
        if normalization == .tokens && chunk >= n { loss = ceSum / denominator }
        return ForwardResult(loss: loss, crossEntropySum: ceSum, targetCount: count, auxLoss: aux)
    }

    /// Embeddings and decoder layers only, for their routing (`routingObserver`): no final norm, head
    /// or loss, since the logits ([B·T, V], gigabytes for a 100k vocabulary) are not needed. Keeps
    /// nothing for backward. The layers compute exactly what `forward` computes.
    public func forwardRouting(_ batch: TokenBatch) throws {
        pending = nil
        try checkInputIds(batch)
        _ = try runLayers(batch, lowest: config.numLayers + 1)
    }

    private func checkInputIds(_ batch: TokenBatch) throws {
        let v = config.vocabSize
        for (i, id) in batch.inputIds.enumerated() where id < 0 || Int(id) >= v {
            throw ESFTError("token id \(id) at row \(i / batch.seqLen), position \(i % batch.seqLen) is outside the vocabulary (vocab_size \(v))")
        }
    }

    /// Embeds and runs every decoder layer; the last layer's output lands in the head's input. Layers at or
    /// above `lowest` keep their activations for backward. Returns the summed aux loss.
    private func runLayers(_ batch: TokenBatch, lowest: Int) throws -> Double {
        let n = batch.batch * batch.seqLen, d = config.hiddenSize
        let tables = ropeTables(length: batch.seqLen)
        func input(_ l: Int) -> UnsafeMutablePointer<Float> {
            if l == config.numLayers { return head.finalInput_ND.reuse(count: n * d) }
            return l >= lowest ? layerSaved[l].input_ND.reuse(count: n * d) : belowInputs[l % 2].reuse(count: n * d)
        }

        let x0 = input(0)
        batch.inputIds.withUnsafeBufferPointer { ids in
            parallelChunks(n, grain: 64) { r in for t in r { embed.copyRows(Int(ids[t]), 1, into: x0 + t * d) } }
        }
        var aux = 0.0
        if auxLossAlpha > 0 { balance?.begin() }
        for l in 0..<config.numLayers {
            aux += try layers[l].forward(x: input(l), out: input(l + 1), batch: batch.batch, seqLen: batch.seqLen, rope: tables,
                                         auxAlpha: auxLossAlpha, auxRows: auxLossRows ?? batch.batch,
                                         saved: l >= lowest && !recomputeLayers ? layerSaved[l] : belowSaved, scratch: scratch,
                                         observer: routingObserver)
        }
        if auxLossAlpha > 0, let balance {
            // This micro-batch's share of the rows the loss averages over (1 for a lone forward), as DeepSeek's loss weighs rows.
            aux += try balance.finish(exchange: exchange, alpha: Double(auxLossAlpha), moeLayers: config.moeLayers.count,
                                      seqLen: batch.seqLen, auxRows: auxLossRows)
        }
        return aux
    }

    /// Accumulates ∂(loss + aux)/∂θ into the gradient of every trainable parameter (call zeroGrad between steps).
    public func backward() throws {
        guard let (batch, lowest, recompute) = pending else { throw ESFTError("backward() needs a preceding forward(training: true)") }
        pending = nil
        let n = batch.batch * batch.seqLen, d = config.hiddenSize
        let tables = ropeTables(length: batch.seqLen)
        let xf = head.finalInput_ND.reuse(count: n * d)
        let dfn = scratch.dFinalNormed_ND.reuse(count: n * d)
        let dHidden = scratch.dHidden_ND.reuse(count: n * d)
        let needBelowHead = lowest < config.numLayers
        // The head's backward ran in forward, chunk by chunk (lm_head's gradient, and ∂L/∂(final normed) in dfn).
        guard needBelowHead || finalNorm.isTrainable else { return }
        RMSNorm.backward(dy: dfn, x: xf, weight: finalNorm.value, rstd: head.finalRstd_N.reuse(count: n),
                         dx: needBelowHead ? dHidden : nil, dWeight: finalNorm.gradPointer, rows: n, dim: d,
                         accumulate: false)
        guard needBelowHead else { return }
        for l in stride(from: config.numLayers - 1, through: lowest, by: -1) {
            let x = layerSaved[l].input_ND.reuse(count: n * d)
            var saved = layerSaved[l]
            if recompute {  // as the forward ran: it kept only the layer inputs
                // The aux loss and the dispatch counters were taken in the first forward: not again.
                dispatchCounters.paused = true
                defer { dispatchCounters.paused = false }
                _ = try layers[l].forward(x: x, out: recomputedOut.reuse(count: n * d), batch: batch.batch, seqLen: batch.seqLen,
                                          rope: tables, auxAlpha: auxLossAlpha, auxRows: auxLossRows ?? batch.batch,
                                          saved: belowSaved, scratch: scratch, observer: nil)
                saved = belowSaved
            }
            try layers[l].backward(dHidden: dHidden, x: x, batch: batch.batch, seqLen: batch.seqLen, rope: tables,
                                   auxAlpha: auxLossAlpha, auxRows: auxLossRows ?? batch.batch,
                                   needInputGrad: l > lowest || embed.isTrainable, saved: saved, scratch: scratch)
        }
        if let dE = embed.gradPointer {
            // The padding row gets nothing from the lookup (transformers' padding_idx), where the family has one.
            let pad = config.paddingIdx.map(Int32.init) ?? -1
            for t in 0..<n where batch.inputIds[t] != pad { axpy(d, 1, dHidden + t * d, dE + Int(batch.inputIds[t]) * d) }
        }
    }

    public func zeroGrad() { for p in parameters.trainable { p.zeroGrad() } }

    private func ropeTables(length: Int) -> RopeTables {
        if length != ropeLength {
            let (c, s) = rope.tables(length: length)
            ropeCos = FloatBuffer(count: c.count); ropeSin = FloatBuffer(count: s.count)
            ropeCos.pointer.update(from: c, count: c.count); ropeSin.pointer.update(from: s, count: s.count)
            ropeLength = length
        }
        return RopeTables(cos: ropeCos.pointer, sin: ropeSin.pointer, softmaxScale: rope.softmaxScale)
    }

    /// Bytes of activations and scratch currently held (for memory reports).
    public var activationBytes: Int {
        layerSaved.reduce(0) { $0 + $1.heldBytes } + belowSaved.heldBytes + belowInputs.reduce(0) { $0 + $1.heldBytes }
            + recomputedOut.heldBytes + head.heldBytes + scratch.heldBytes
    }
}

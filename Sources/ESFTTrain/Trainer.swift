import ESFTData
import ESFTKernels
import ESFTMethod
import ESFTModel
import ESFTParallel
import ESFTStore
import Foundation

/// A step whose loss or gradient norm is not finite: training stops before that step's update. Every
/// rank sees the same global values, so every rank stops at the same step.
struct NonFiniteTraining: Error { let message: String }

/// What to train: an ESFT expert config, or everything (`--full`, the FFT baseline).
public enum TrainableSelection {
    case experts(ExpertConfig, source: String)
    case full
}

/// Expert-parallel, data-parallel training on every rank of `comm`. Rank r owns its share of the routed
/// experts of every MoE layer (`--placement`; mapped from the expert shards); everything else is replicated. Each rank
/// trains on its share of every global batch; the loss is normalised by the global count of target tokens,
/// so R ranks make the update one rank makes on the same batch.
public final class Trainer {
    public let comm: Communicator
    public let options: TrainOptions
    public let config: ModelConfig
    public let model: MoETransformer
    public let dataset: TokenDataset
    public let selection: TrainableSelection
    /// This rank's trainable state: the routed experts it owns, then the replicated tensors (all-reduced).
    public let arena: ParameterArena
    public var owned: [Parameter] { arena.ownedViews.map(\.parameter) }
    public var replicated: [Parameter] { arena.replicatedViews.map(\.parameter) }
    /// What the job trains, the same on every rank.
    public let trainable: TrainableSet
    let optimizer: AdamW
    var sampler: Sampler
    let out: URL
    let log: (String) -> Void
    /// The best evaluation's weights, with `final: best`.
    let best: BestWeights?
    /// Where to write the first step's gradients (all ranks' tensors, gathered like trained.safetensors), if anywhere.
    public var saveGradients: URL?
    /// Faults the fault tests inject (ESFT_FAILPOINT, DebugFaults); none in a normal run.
    let debugFaults: DebugFaults

    public init(comm: Communicator, modelURL: URL, dataPath: String, selection: TrainableSelection, options: TrainOptions,
                out: URL, log: @escaping (String) -> Void) throws {
        self.comm = comm; self.options = options; self.selection = selection; self.out = out; self.log = log
        debugFaults = try DebugFaults.fromEnvironment()
        let ranks = comm.size
        let inputs = try TrainInputs(modelURL: modelURL, dataPath: dataPath, selection: selection, options: options, ranks: ranks)
        dataset = inputs.dataset
        let probe = inputs.config

        let placement = try Self.placement(options, model: probe, ranks: ranks, selection: selection, comm: comm, log: log)
        let rank = comm.rank
        let loaded = try LoadedModel.open(modelURL, keepingExpert: probe.nRoutedExperts > 0 ? { l, e in placement.owns(rank: rank, layer: l, expert: e) } : nil)
        config = loaded.config
        let exchange: RowExchange = ranks == 1 ? LocalExchange() : CommunicatorExchange(comm)
        model = try MoETransformer(config: config, parameters: loaded.parameters, placement: placement, exchange: exchange)
        model.auxLossAlpha = Float(options.auxAlpha)
        model.recomputeLayers = options.recompute
        // The aux loss of a row weighs 1/(rows it is averaged over): the step's rows, or a micro-batch's.
        model.auxLossRows = options.auxScale == .batch ? options.batchRows : options.batchRows / options.accumulation

        let trainable: TrainableSet
        switch selection {
        case .full: trainable = .all(config)
        case .experts(let cfg, _): trainable = cfg.trainableSet(model: config)
        }
        self.trainable = trainable
        // Backward must reach the job's lowest trainable layer on every rank (see MoETransformer).
        model.jobLowestTrainableLayer = trainable.lowestLayer(numLayers: config.numLayers)
        // A rank trains only the routed experts its placement gives it (a Hugging Face directory maps every
        // expert on every rank; the others stay frozen views here and train on their owners).
        let chosen = loaded.parameters.ordered.filter { p in
            guard trainable.contains(p.id) else { return false }
            guard let x = p.id.routedExpert else { return true }
            return placement.owns(rank: rank, layer: x.layer, expert: x.expert)
        }
        arena = ParameterArena(owned: chosen.filter { $0.id.routedExpert != nil },
                               replicated: chosen.filter { $0.id.routedExpert == nil })
        optimizer = AdamW(arena, hyper: options.adam)
        best = options.finalWeights == .best ? BestWeights(count: arena.count) : nil
        sampler = Sampler(rows: dataset.trainRows, seed: options.seed)
    }

    private func batch(_ rows: ArraySlice<Int>) throws -> TokenBatch { try dataset.batch(rows: rows) }

    /// One optimizer step over the next global batch. Returns (loss, aux loss, grad norm, target tokens).
    func step(lr: Double) throws -> (loss: Double, aux: Double, gradNorm: Double, targets: Int) {
        let rows = sampler.nextBatch(options.batchRows)
        let micro = options.batchRows / options.accumulation
        let shares = (0..<options.accumulation).map {
            Sampler.share(of: Array(rows[($0 * micro)..<(($0 + 1) * micro)]), rank: comm.rank, ranks: comm.size)
        }
        let batches = try shares.map(batch)
        var targets = Int64(batches.reduce(0) { $0 + $1.targetCount })
        targets = try comm.allReduceSum(targets, tag: "step targets")
        guard targets > 0 else { throw ESFTError("the batch has no target tokens (every label is -100)") }
        // Row normalisation divides each row's mean by the job's count of rows that hold a target.
        var denominator = Double(targets)
        if options.lossNormalization == .rows {
            let rows = Int64(batches.reduce(0) { $0 + $1.rowsWithTargets })
            denominator = Double(try comm.allReduceSum(rows, tag: "step rows"))
        }
        var sums = [0.0, 0.0]
        for b in batches {
            let r = try model.forward(b, training: true, lossDenominator: denominator, normalization: options.lossNormalization)
            sums[0] += options.lossNormalization == .tokens ? r.crossEntropySum : r.loss; sums[1] += r.auxLoss
            try model.backward()
        }
        if debugFaults.poisons(rank: comm.rank, step: optimizer.step + 1), arena.count > 0 { arena.gradients.pointer[0] = .nan }
        try comm.allReduceSum(&sums, tag: "step loss")
        let loss = options.lossNormalization == .tokens ? sums[0] / Double(targets) : sums[0]
        guard loss.isFinite, sums[1].isFinite else {
            throw NonFiniteTraining(message: "the loss became \(loss) (aux \(sums[1]))")
        }
        // Which replicated gradient was non-finite on this rank, before the all-reduce spreads it to every rank.
        let localReplicated = comm.size > 1 ? arena.firstNonFinite(arena.replicatedViews) : nil
        try allReduceReplicatedGradients()
        if let url = saveGradients, optimizer.step == 0 {
            try writeTrainedTensors(url, metadata: ["content": "gradients of step 1, before clipping"], gradients: true)
        }
        let norm = try globalGradNorm()
        guard norm.isFinite else {
            throw NonFiniteTraining(message: "the gradient norm became \(norm) (loss \(loss))\(try firstNonFiniteGradient(localReplicated))")
        }
        if options.gradClip > 0 && norm > options.gradClip {
            arena.scaleGradients(by: Float(options.gradClip / (norm + 1e-6)))
        }
        optimizer.update(lr: lr)
        arena.zeroGradients()
        return (loss, sums[1], norm, Int(targets))
    }

    /// Replicated trainable tensors get the same (summed) gradient on every rank: one all-reduce, in place
    /// on the arena's replicated region.
    private func allReduceReplicatedGradients() throws {
        guard comm.size > 1 else { return }
        try comm.allReduceSum(arena.replicatedGradients, count: arena.replicatedCount, tag: "gradients")
    }

    /// Names the first non-finite gradient of the job (lowest rank first; a rank's owned tensors before its
    /// replicated ones, which `replicatedBeforeReduce` found before the all-reduce): every rank calls it.
    private func firstNonFiniteGradient(_ replicatedBeforeReduce: Int?) throws -> String {
        let local = arena.firstNonFinite(arena.ownedViews) ?? replicatedBeforeReduce ?? (comm.size == 1 ? arena.firstNonFinite(arena.replicatedViews) : nil)
        let all = try comm.allGather(Int64(local ?? -1), tag: "non-finite gradient")
        guard let rank = all.firstIndex(where: { $0 >= 0 }) else { return "" }
        // The name is known on that rank only: broadcast its bytes (names are far shorter than 512).
        var bytes = [UInt8](repeating: 0, count: 512)
        if rank == comm.rank { for (i, b) in arena.views[Int(all[rank])].parameter.name.utf8.prefix(511).enumerated() { bytes[i] = b } }
        try bytes.withUnsafeMutableBufferPointer { try comm.broadcast($0, from: rank, tag: "non-finite gradient") }
        let name = String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
        return "; first non-finite gradient on rank \(rank): \(name)"
    }

    /// √(Σ over every trainable tensor of the job of Σ g²): experts counted on their owner, replicated once.
    private func globalGradNorm() throws -> Double {
        let experts = try comm.allReduceSum(arena.gradientSumOfSquares(arena.ownedViews), tag: "grad norm")
        return (experts + arena.gradientSumOfSquares(arena.replicatedViews)).squareRoot()
    }

    /// Mean cross-entropy over (up to `evalRows`) validation rows, sharded across ranks: over their target
    /// tokens, or with row normalisation the mean of each row's mean (the reference's eval loss).
    func validate() throws -> (loss: Double, targets: Int)? {
        var rows = dataset.validationRows
        if options.evalRows > 0 { rows = Array(rows.prefix(options.evalRows)) }
        guard !rows.isEmpty else { return nil }
        let mine = Sampler.share(of: rows, rank: comm.rank, ranks: comm.size)
        let chunk = max(1, options.batchRows / options.accumulation / comm.size)
        // Every rank runs the same number of forwards (MoE exchanges are collectives), some possibly empty.
        let calls = (rows.count / comm.size + 1 + chunk - 1) / chunk
        let byRows = options.lossNormalization == .rows
        var sums = [0.0, 0.0, 0.0]  // Σ CE (or Σ row means), targets, rows holding a target
        for c in 0..<calls {
            let lo = min(mine.count, c * chunk), hi = min(mine.count, lo + chunk)
            let b = try batch(mine[(mine.startIndex + lo)..<(mine.startIndex + hi)])
            let r = try model.forward(b, training: false, lossDenominator: byRows ? 1 : nil, normalization: options.lossNormalization)
            sums[0] += byRows ? r.loss : r.crossEntropySum; sums[1] += Double(r.targetCount)
            if byRows { sums[2] += Double(b.rowsWithTargets) }
        }
        try comm.allReduceSum(&sums, tag: "validation")
        guard sums[1] > 0 else { return nil }
        return (sums[0] / (byRows ? sums[2] : sums[1]), Int(sums[1]))
    }
}

import ESFTData
import ESFTKernels
import ESFTMethod
import ESFTModel
import ESFTParallel
import ESFTStore
import Foundation

/// Routing statistics from forward passes of a model over a seeded sample of a token dataset's train
/// samples (`esft score --model`), split over the ranks of `comm` (data parallel; each rank maps the whole
/// frozen model).
///
/// Determinism: each forward batch (a fixed run of scored rows, see `ScoringPlan`) accumulates its own
/// sums; rank 0 gathers every batch's sums in global batch order and adds them in that order. The
/// floating-point additions are then the same for any rank count, so 1...R ranks give the same result.
public struct ModelScorer {
    public struct Options {
        public var model: URL
        public var data: URL
        /// Tokens of samples to score; nil: every train sample.
        public var tokens: Int?
        public var seed: UInt64
        public var batchRows: Int
        /// The reference's scoring (`SampleScoringPlan`): each sample alone, chosen as W reference processes
        /// would choose them; nil: whole packed rows (`ScoringPlan`).
        public var perSampleReferenceRanks: Int?
        /// Also return routing logs (one line per scored sample; needs perSampleReferenceRanks).
        public var routingLogs: Bool
        public init(model: URL, data: URL, tokens: Int?, seed: UInt64, batchRows: Int, perSampleReferenceRanks: Int? = nil,
                    routingLogs: Bool = false) {
            self.model = model; self.data = data; self.tokens = tokens; self.seed = seed; self.batchRows = batchRows
            self.perSampleReferenceRanks = perSampleReferenceRanks; self.routingLogs = routingLogs
        }
    }

    /// What rank 0 gets back.
    public struct Result {
        public var statistics: RoutingStatistics
        public var modelFingerprint: String
        /// FNV-1a of the dataset file's bytes: names exactly the data that was scored.
        public var dataDigest: String
        public var ranks: Int
        /// With `routingLogs`: MoE layer → its `expert_weights_<layer>.txt`, lines in sample order.
        public var routingLogs: [Int: Data]
    }

    public let options: Options
    public let comm: Communicator
    /// Rank 0's progress lines (the caller decides where they go).
    public let log: (String) -> Void

    public init(options: Options, comm: Communicator, log: @escaping (String) -> Void) {
        self.options = options; self.comm = comm; self.log = log
    }

    /// Runs on every rank: the reduced statistics on rank 0, nil on the others.
    public func run() throws -> Result? {
        let o = options, dataPath = o.data.path
        let dataset = try TokenDataset(path: dataPath)
        let loaded = try LoadedModel.open(o.model)
        let config = loaded.config
        guard dataset.metadata.vocabSize <= config.vocabSize else {
            throw ESFTError("\(dataPath): vocab_size \(dataset.metadata.vocabSize) is larger than the model's \(config.vocabSize) (\(o.model.path)); was it tokenized for another model?")
        }
        let passes = try Self.passes(o, dataset: dataset, rank: comm.rank, ranks: comm.size)
        try ModelSizes(config).requireBatchMemory(rows: o.perSampleReferenceRanks == nil ? min(o.batchRows, max(1, passes.totalTokens / dataset.seqLen)) : 1,
                                                  seqLen: dataset.seqLen, training: false,
                                                  what: "a batch of --batch-rows \(o.batchRows) rows of \(dataset.seqLen) tokens",
                                                  source: o.model.appendingPathComponent("config.json").path)
        let model = try MoETransformer(config: config, parameters: loaded.parameters)
        let mine = passes.mine
        let progress = ScoringProgress(say: comm.rank == 0 ? log : { _ in }, totalPasses: passes.count, totalTokens: passes.totalTokens,
                                       ranks: comm.size, sharePasses: mine.count, unit: passes.unit)
        progress.say(passes.description)

        // Per pass (a batch of rows, or one sample): its own statistics, so the global sum can be formed in a
        // fixed order.
        var doubles: [Double] = [], integers: [Int64] = []
        var stats = try RoutingStatistics(model: config)
        var grouping = TokenGrouping.oneSample(tokens: 0)
        var logLines = RoutingLogLines(layers: o.routingLogs ? config.moeLayers : [])
        model.routingObserver = { view in
            try stats.add(view, grouping: grouping)
            logLines.add(view)  // a pass is one sample when logging (checked by the command)
        }
        for b in mine {
            let (batch, g) = try passes.make(b)
            stats = try RoutingStatistics(model: config)
            grouping = g
            // Layers only: the head's logits are not needed for routing (and are huge for a 100k vocabulary).
            try model.forwardRouting(batch)
            doubles += stats.doubleState; integers += stats.integerState
            progress.passDone(tokens: batch.batch * batch.seqLen)
        }

        // Ordered gather to rank 0: ranks hold contiguous runs of batches, so rank order is batch order.
        let d = stats.doubleState.count, n = stats.integerState.count
        var rowsTo = [Int](repeating: 0, count: comm.size)
        rowsTo[0] = mine.count
        let exchange = CommunicatorExchange(comm)
        let gotDoubles = try doubles.withUnsafeBufferPointer { try exchange.exchangeRows($0, rowsTo: rowsTo, width: d, tag: "score gather sums") }
        let gotIntegers = try integers.withUnsafeBufferPointer { try exchange.exchangeRows($0, rowsTo: rowsTo, width: n, tag: "score gather counts") }
        let logs = try logLines.gather(to: exchange)
        let seconds = try comm.maxAllReduce(progress.elapsed, tag: "score time")
        guard comm.rank == 0 else { return nil }

        var total = try RoutingStatistics(model: config)
        for b in 0..<passes.count {
            try total.merge(RoutingStatistics(layers: total.layers, experts: total.experts, topK: total.topK,
                                              doubleState: Array(gotDoubles.values[(b * d)..<((b + 1) * d)]),
                                              integerState: Array(gotIntegers.values[(b * n)..<((b + 1) * n)])))
        }
        progress.finish(seconds: seconds, countedTokens: passes.countedTokens)
        return Result(statistics: total, modelFingerprint: modelFingerprint(config: config),
                      dataDigest: try Self.digest(ofFile: o.data), ranks: comm.size, routingLogs: logs)
    }

    /// The forward passes of a scoring run, in their global order, and this rank's contiguous run of them.
    struct Passes {
        let count: Int
        let mine: Range<Int>
        /// Tokens the passes run (counted or not), and what a pass is called in progress lines.
        let totalTokens: Int
        let unit: String
        let countedTokens: Int
        let description: String
        let make: (Int) throws -> (TokenBatch, TokenGrouping)
    }

    static func passes(_ o: Options, dataset: TokenDataset, rank: Int, ranks: Int) throws -> Passes {
        let source = o.data.path, t = dataset.seqLen
        if let w = o.perSampleReferenceRanks {
            let plan = try SampleScoringPlan(samples: dataset.samples, tokens: o.tokens, seed: o.seed, referenceRanks: w, source: source)
            let samples = plan.chosenSamples.map { dataset.samples[$0] }
            return Passes(
                count: samples.count, mine: plan.passes(rank: rank, ranks: ranks), totalTokens: plan.countedTokens,
                unit: "samples", countedTokens: plan.countedTokens,
                description: "esft score: \(samples.count) samples, each alone (the reference's scoring: shuffled with seed \(o.seed) as CPython's random.shuffle, taken as \(w) reference processes would), \(plan.countedTokens) tokens counted of \(plan.availableTokens); \(ranks) rank\(ranks == 1 ? "" : "s")",
                make: { b in
                    let s = samples[b]
                    let ids = Array(try dataset.inputIds(rows: s.row..<(s.row + 1))[s.start..<(s.start + s.length)])
                    let batch = TokenBatch(batch: 1, seqLen: s.length, inputIds: ids,
                                           labels: [Int32](repeating: CrossEntropy.ignoreIndex, count: s.length))
                    return (batch, .oneSample(tokens: s.length))
                })
        }
        let plan = try ScoringPlan(samples: dataset.samples, split: dataset.split, seqLen: t, tokens: o.tokens,
                                   seed: o.seed, batchRows: o.batchRows, source: source)
        return Passes(
            count: plan.batchCount, mine: plan.batches(rank: rank, ranks: ranks), totalTokens: plan.rows.count * t,
            unit: "batches", countedTokens: plan.countedTokens,
            description: "esft score: \(plan.chosenSamples.count) samples, \(plan.countedTokens) tokens counted (of \(plan.availableTokens) in train samples\(o.tokens.map { ", asked \($0)" } ?? "")) in \(plan.rows.count) rows of \(t) tokens; \(ranks) rank\(ranks == 1 ? "" : "s"), \(plan.batchCount) batches of ≤ \(plan.batchRows) rows",
            make: { b in (try dataset.batch(rows: plan.rows(ofBatch: b), labels: false), try plan.grouping(ofBatch: b)) })
    }

    static func digest(ofFile url: URL) throws -> String {
        let file = try MappedFile(path: url.path)
        var h = FNV1a64()
        h.add(file.bytes)
        return h.hexDigest
    }
}

/// Rank 0's progress lines: passes (batches of rows, or single samples) of its own share, and the rate.
final class ScoringProgress {
    let say: (String) -> Void, totalPasses: Int, totalTokens: Int, ranks: Int, sharePasses: Int, unit: String
    private let started = Date()
    private var lastPrint = Date.distantPast
    private var passesDone = 0, tokensDone = 0

    init(say: @escaping (String) -> Void, totalPasses: Int, totalTokens: Int, ranks: Int, sharePasses: Int, unit: String) {
        self.say = say; self.totalPasses = totalPasses; self.totalTokens = totalTokens; self.ranks = ranks
        self.sharePasses = sharePasses; self.unit = unit
    }

    var elapsed: Double { Date().timeIntervalSince(started) }

    func passDone(tokens: Int) {
        passesDone += 1; tokensDone += tokens
        guard passesDone == sharePasses || Date().timeIntervalSince(lastPrint) >= 2 else { return }
        lastPrint = Date()
        let rate = Double(tokensDone) / max(elapsed, 1e-9)
        say(String(format: "esft score: rank 0: %d / %d %@ of its share (%d in all), %.0f tokens/s per rank", passesDone, sharePasses, unit, totalPasses, rate))
    }

    func finish(seconds: Double, countedTokens: Int) {
        let run = Double(totalTokens) / max(seconds, 1e-9)
        say(String(format: "esft score: %ld %@ (%ld tokens run, %ld counted) in %.2f s on %ld rank%@: %.0f tokens/s run", totalPasses, unit, totalTokens, countedTokens, seconds, ranks, ranks == 1 ? "" : "s", run))
    }
}

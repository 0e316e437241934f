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
        public init(model: URL, data: URL, tokens: Int?, seed: UInt64, batchRows: Int) {
            self.model = model; self.data = data; self.tokens = tokens; self.seed = seed; self.batchRows = batchRows
        }
    }

    /// What rank 0 gets back.
    public struct Result {
        public var statistics: RoutingStatistics
        public var modelFingerprint: String
        /// FNV-1a of the dataset file's bytes: names exactly the data that was scored.
        public var dataDigest: String
        public var ranks: Int
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
        let plan = try ScoringPlan(samples: dataset.samples, split: dataset.split, seqLen: dataset.seqLen, tokens: o.tokens,
                                   seed: o.seed, batchRows: o.batchRows, source: dataPath)
        try ModelSizes(config).requireBatchMemory(rows: min(o.batchRows, plan.rows.count), seqLen: dataset.seqLen, training: false,
                                                  what: "a batch of --batch-rows \(o.batchRows) rows of \(dataset.seqLen) tokens",
                                                  source: o.model.appendingPathComponent("config.json").path)
        let model = try DeepseekV2Model(config: config, parameters: loaded.parameters)
        let mine = plan.batches(rank: comm.rank, ranks: comm.size)
        let progress = ScoringProgress(say: comm.rank == 0 ? log : { _ in }, totalRows: plan.rows.count, ranks: comm.size,
                                       shareRows: mine.reduce(0) { $0 + plan.rows(ofBatch: $1).count }, seqLen: dataset.seqLen)
        progress.start(plan: plan, tokens: o.tokens)

        // Per batch: its own statistics, so the global sum can be formed in a fixed order.
        var doubles: [Double] = [], integers: [Int64] = []
        var stats = try RoutingStatistics(model: config)
        var grouping = TokenGrouping.oneSample(tokens: 0)
        model.routingObserver = { view in try stats.add(view, grouping: grouping) }
        for b in mine {
            let rows = plan.rows(ofBatch: b)
            stats = try RoutingStatistics(model: config)
            grouping = try plan.grouping(ofBatch: b)
            // Layers only: the head's logits are not needed for routing (and are huge for a 100k vocabulary).
            try model.forwardRouting(dataset.batch(rows: rows, labels: false))
            doubles += stats.doubleState; integers += stats.integerState
            progress.batchDone(rows: rows.count)
        }

        // Ordered gather to rank 0: ranks hold contiguous runs of batches, so rank order is batch order.
        let d = stats.doubleState.count, n = stats.integerState.count
        var rowsTo = [Int](repeating: 0, count: comm.size)
        rowsTo[0] = mine.count
        let exchange = CommunicatorExchange(comm)
        let gotDoubles = try doubles.withUnsafeBufferPointer { try exchange.exchangeRows($0, rowsTo: rowsTo, width: d, tag: "score gather sums") }
        let gotIntegers = try integers.withUnsafeBufferPointer { try exchange.exchangeRows($0, rowsTo: rowsTo, width: n, tag: "score gather counts") }
        let seconds = try comm.maxAllReduce(progress.elapsed, tag: "score time")
        guard comm.rank == 0 else { return nil }

        var total = try RoutingStatistics(model: config)
        for b in 0..<plan.batchCount {
            try total.merge(RoutingStatistics(layers: total.layers, experts: total.experts, topK: total.topK,
                                              doubleState: Array(gotDoubles.values[(b * d)..<((b + 1) * d)]),
                                              integerState: Array(gotIntegers.values[(b * n)..<((b + 1) * n)])))
        }
        progress.finish(seconds: seconds, countedTokens: plan.countedTokens)
        return Result(statistics: total, modelFingerprint: modelFingerprint(config: config),
                      dataDigest: try Self.digest(ofFile: o.data), ranks: comm.size)
    }

    static func digest(ofFile url: URL) throws -> String {
        let file = try MappedFile(path: url.path)
        var h = FNV1a64()
        h.add(file.bytes)
        return h.hexDigest
    }
}

/// Rank 0's progress lines: rows of its own share, and the rate of the whole job.
final class ScoringProgress {
    let say: (String) -> Void, totalRows: Int, ranks: Int, shareRows: Int, seqLen: Int
    private let started = Date()
    private var lastPrint = Date.distantPast
    private var rowsDone = 0

    init(say: @escaping (String) -> Void, totalRows: Int, ranks: Int, shareRows: Int, seqLen: Int) {
        self.say = say; self.totalRows = totalRows; self.ranks = ranks
        self.shareRows = shareRows; self.seqLen = seqLen
    }

    var elapsed: Double { Date().timeIntervalSince(started) }

    func start(plan: ScoringPlan, tokens: Int?) {
        say("esft score: \(plan.chosenSamples.count) samples, \(plan.countedTokens) tokens counted (of \(plan.availableTokens) in train samples\(tokens.map { ", asked \($0)" } ?? "")) in \(totalRows) rows of \(seqLen) tokens; \(ranks) rank\(ranks == 1 ? "" : "s"), \(plan.batchCount) batches of ≤ \(plan.batchRows) rows")
    }

    func batchDone(rows: Int) {
        rowsDone += rows
        guard rowsDone == shareRows || Date().timeIntervalSince(lastPrint) >= 2 else { return }
        lastPrint = Date()
        let rate = Double(rowsDone * seqLen) / max(elapsed, 1e-9)
        say(String(format: "esft score: rank 0: %d / %d rows of its share (%d rows in all), %.0f tokens/s per rank", rowsDone, shareRows, totalRows, rate))
    }

    func finish(seconds: Double, countedTokens: Int) {
        let run = Double(totalRows * seqLen) / max(seconds, 1e-9)
        say(String(format: "esft score: %d rows (%d tokens run, %d counted) in %.2f s on %d rank%@: %.0f tokens/s run", totalRows, totalRows * seqLen, countedTokens, seconds, ranks, ranks == 1 ? "" : "s", run))
    }
}

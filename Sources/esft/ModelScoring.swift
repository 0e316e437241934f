import ESFTData
import ESFTKernels
import ESFTMethod
import ESFTModel
import ESFTParallel
import ESFTStore
import Foundation

/// `esft score --model M --data D.h5`: routing statistics from forward passes of a model over a seeded
/// sample of a token dataset's train samples, split over the ranks of the job (data parallel, each rank
/// holds the whole frozen model, memory-mapped).
///
/// Determinism: each forward batch (a fixed run of scored rows, see `ScoringPlan`) accumulates its own
/// sums; rank 0 gathers every batch's sums in global batch order and adds them in that order. The
/// floating-point additions are then the same for any rank count, so 1...R ranks write the same file
/// (up to the `ranks` field).
enum ModelScoring {
    struct Options {
        var model: URL
        var data: URL
        var tokens: Int?          // nil: every train sample
        var seed: UInt64
        var batchRows: Int
        var threads: Int?
    }

    /// Reads the model-mode options (arguments are checked before MPI starts, so a typo ends every
    /// rank alike).
    static func options(model: String, _ args: inout Arguments) throws -> Options {
        guard let data = try args.option("--data") else {
            throw ESFTError("score: --model needs --data DATA.h5 (an esft token dataset)")
        }
        guard let tokenText = try args.option("--tokens") else {
            throw ESFTError("score: --model needs --tokens N (tokens of samples to score) or --tokens all")
        }
        var tokens: Int? = nil
        if tokenText != "all" {
            guard let n = Int(tokenText), n >= 1 else { throw ESFTError("score: --tokens must be a positive integer or 'all', got '\(tokenText)'") }
            tokens = n
        }
        let seed = try args.int("--seed", default: 0, min: 0)!
        let batchRows = try args.int("--batch-rows", default: 4, min: 1)!
        let threads = try args.int("--threads", min: 1)
        try args.finish()
        for (flag, path) in [("--model", model), ("--data", data)] where !FileManager.default.fileExists(atPath: path) {
            throw ESFTError("score: \(flag) \(path): no such file or directory")
        }
        return Options(model: URL(fileURLWithPath: model), data: URL(fileURLWithPath: data), tokens: tokens,
                       seed: UInt64(seed), batchRows: batchRows, threads: threads)
    }

    /// Runs on every rank; rank 0 writes `out`, the others nothing. Errors on any rank abort the job.
    static func run(_ o: Options, normalize: ScoreNormalization, out: URL) throws {
        Threads.set(o.threads ?? Threads.defaultCount())
        let comm = try Communicators.fromEnvironment()
        runRanked(comm) {
            let input = try score(o, comm: comm)
            if let input {
                let summary = try ScoreCommand.write(input, normalize: normalize, to: out)
                print(summary)
            }
        }
        runRanked(comm) { try comm.finalize() }
    }

    /// The reduced statistics on rank 0, nil on the others.
    static func score(_ o: Options, comm: Communicator) throws -> ScoreCommand.ScoreInput? {
        let dataPath = o.data.path
        let dataset = try TokenDataset(path: dataPath)
        let loaded = try LoadedModel.open(o.model)
        let config = loaded.config
        guard dataset.metadata.vocabSize <= config.vocabSize else {
            throw ESFTError("\(dataPath): vocab_size \(dataset.metadata.vocabSize) is larger than the model's \(config.vocabSize) (\(o.model.path)); was it tokenized for another model?")
        }
        let plan = try ScoringPlan(samples: dataset.samples, split: dataset.split, seqLen: dataset.seqLen, tokens: o.tokens,
                                   seed: o.seed, batchRows: o.batchRows, source: dataPath)
        let model = try DeepseekV2Model(config: config, parameters: loaded.parameters)
        let mine = plan.batches(rank: comm.rank, ranks: comm.size)
        let progress = Progress(enabled: comm.rank == 0, totalRows: plan.rows.count, ranks: comm.size,
                                shareRows: mine.reduce(0) { $0 + plan.rows(ofBatch: $1).count }, seqLen: dataset.seqLen)
        progress.start(plan: plan, tokens: o.tokens)

        // Per batch: its own statistics, so the global sum can be formed in a fixed order.
        var doubles: [Double] = [], integers: [Int64] = []
        var stats = try RoutingStatistics(model: config)
        var grouping = TokenGrouping.oneSample(tokens: 0)
        var observed: Error?
        model.routingObserver = { view in
            do { try stats.add(view, grouping: grouping) } catch { if observed == nil { observed = error } }
        }
        let t = dataset.seqLen
        for b in mine {
            let rows = plan.rows(ofBatch: b)
            var ids: [Int32] = []
            ids.reserveCapacity(rows.count * t)
            for r in rows { ids += dataset.inputIds[(r * t)..<((r + 1) * t)] }
            stats = try RoutingStatistics(model: config)
            grouping = try plan.grouping(ofBatch: b)
            // Layers only: the head's logits are not needed for routing (and are huge for a 100k vocabulary).
            let labels = [Int32](repeating: CrossEntropy.ignoreIndex, count: ids.count)
            try model.forwardRouting(TokenBatch(batch: rows.count, seqLen: t, inputIds: ids, labels: labels))
            if let observed { throw observed }
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
        return ScoreCommand.ScoreInput(statistics: total, source: "model \(o.model.path) on \(dataPath)",
                                       modelFingerprint: modelFingerprint(config: config),
                                       dataDigest: try digest(ofFile: o.data), seed: Int(o.seed), ranks: comm.size)
    }

    /// FNV-1a of the dataset file's bytes: names exactly the data that was scored.
    static func digest(ofFile url: URL) throws -> String {
        let file = try MappedFile(path: url.path)
        var h = FNV1a64()
        h.add(file.bytes)
        return h.hexDigest
    }
}

/// Rank 0's progress lines on stderr: rows of its own share, and the rate of the whole job.
final class Progress {
    let enabled: Bool, totalRows: Int, ranks: Int, shareRows: Int, seqLen: Int
    private let started = Date()
    private var lastPrint = Date.distantPast
    private var rowsDone = 0

    init(enabled: Bool, totalRows: Int, ranks: Int, shareRows: Int, seqLen: Int) {
        self.enabled = enabled; self.totalRows = totalRows; self.ranks = ranks
        self.shareRows = shareRows; self.seqLen = seqLen
    }

    var elapsed: Double { Date().timeIntervalSince(started) }

    func start(plan: ScoringPlan, tokens: Int?) {
        say("esft score: \(plan.chosenSamples.count) samples, \(plan.countedTokens) tokens counted (of \(plan.availableTokens) in train samples\(tokens.map { ", asked \($0)" } ?? "")) in \(totalRows) rows of \(seqLen) tokens; \(ranks) rank\(ranks == 1 ? "" : "s"), \(plan.batchCount) batches of ≤ \(plan.batchRows) rows")
    }

    func batchDone(rows: Int) {
        rowsDone += rows
        guard enabled, rowsDone == shareRows || Date().timeIntervalSince(lastPrint) >= 2 else { return }
        lastPrint = Date()
        let rate = Double(rowsDone * seqLen) / max(elapsed, 1e-9)
        say(String(format: "esft score: rank 0: %d / %d rows of its share (%d rows in all), %.0f tokens/s per rank", rowsDone, shareRows, totalRows, rate))
    }

    func finish(seconds: Double, countedTokens: Int) {
        let run = Double(totalRows * seqLen) / max(seconds, 1e-9)
        say(String(format: "esft score: %d rows (%d tokens run, %d counted) in %.2f s on %d rank%@: %.0f tokens/s run", totalRows, totalRows * seqLen, countedTokens, seconds, ranks, ranks == 1 ? "" : "s", run))
    }

    private func say(_ line: String) {
        if enabled { FileHandle.standardError.write((line + "\n").data(using: .utf8)!) }
    }
}

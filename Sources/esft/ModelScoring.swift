import ESFTData
import ESFTKernels
import ESFTMethod
import ESFTModel
import ESFTParallel
import ESFTStore
import ESFTTrain
import Foundation

/// `esft score --model M --data D.h5`: parses the options, runs `ModelScorer` (ESFTTrain) on every rank,
/// and has rank 0 write the scores file and print its summary.
enum ModelScoring {
    struct Options {
        var scorer: ModelScorer.Options
        var threads: Int
        /// --routing-logs DIR: also write the reference's routing logs there.
        var routingLogs: URL?
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
        let recipe = try args.recipe()
        let perSample = args.flag("--score-per-sample") || recipe == .reference
        let referenceRanks = try args.int("--reference-ranks", min: 1)
        if referenceRanks != nil && !perSample { throw ESFTError("score: --reference-ranks belongs to --score-per-sample") }
        let seed = try args.int("--seed", default: recipe == .reference ? Recipe.referenceSeed : 0, min: 0)!
        let batchRows = try args.int("--batch-rows", default: 4, min: 1)!
        let routingLogs = try args.option("--routing-logs")
        if routingLogs != nil && !perSample {
            throw ESFTError("score: --routing-logs needs --score-per-sample (a log line is one sample, run alone, as the reference logs them)")
        }
        let threads = try args.threads()
        try args.gemm()
        try args.finish()
        for (flag, path) in [("--model", model), ("--data", data)] where !FileManager.default.fileExists(atPath: path) {
            throw ESFTError("score: \(flag) \(path): no such file or directory")
        }
        return Options(scorer: ModelScorer.Options(model: URL(fileURLWithPath: model), data: URL(fileURLWithPath: data),
                                                   tokens: tokens, seed: UInt64(seed), batchRows: batchRows,
                                                   perSampleReferenceRanks: perSample ? (referenceRanks ?? 4) : nil,
                                                   routingLogs: routingLogs != nil),
                       threads: threads, routingLogs: routingLogs.map { URL(fileURLWithPath: $0) })
    }

    /// Runs on every rank; rank 0 writes `out`, the others nothing. Errors on any rank abort the job.
    static func run(_ o: Options, normalize: ScoreNormalization, out: URL) throws {
        Threads.set(o.threads)
        let comm = try Communicators.fromEnvironment()
        runRanked(comm) {
            let scorer = ModelScorer(options: o.scorer, comm: comm) { FileHandle.standardError.write(Data(($0 + "\n").utf8)) }
            if let r = try scorer.run() {
                let input = ScoreCommand.ScoreInput(statistics: r.statistics, source: "model \(o.scorer.model.path) on \(o.scorer.data.path)",
                                                    modelFingerprint: r.modelFingerprint, dataDigest: r.dataDigest,
                                                    seed: Int(o.scorer.seed), ranks: r.ranks)
                if let dir = o.routingLogs {
                    try RoutingLogLines.write(r.routingLogs, to: dir)
                    print("wrote routing logs for \(r.routingLogs.count) MoE layers to \(dir.path)")
                }
                print(try ScoreCommand.write(input, normalize: normalize, to: out))
            }
        }
        runRanked(comm) { try comm.finalize() }
    }
}

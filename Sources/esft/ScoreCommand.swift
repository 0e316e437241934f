import ESFTKernels
import ESFTMethod
import Foundation

/// `esft score`: routing statistics from some source → relevance scores file. Each source (reference
/// logs here, a model run on a dataset in ModelScoring) yields a `ScoreInput`; the scoring and writing
/// are shared (`write`).
enum ScoreCommand {
    static let help = """
    Usage: esft score --model DIR --data DATA.h5 --tokens N|all [--seed S] [--batch-rows B] [--threads T] [--gemm G] [--compute C]
                      [--score-per-sample [--reference-ranks W]] [--recipe esft|reference]
                      [--routing-logs DIR] [--normalize samples|tokens] --out SCORES.json
           esft score --from-logs DIR [--top-k K] [--experts E] [--normalize samples|tokens] --out SCORES.json
           mpirun -n R esft score --model ...   (the rows are split over R ranks; same scores for any R)

    Measures how much a task uses each routed expert of each MoE layer (ESFT relevance scores: the
    average gate score and the token selection ratio) and writes them to a scores file for esft select.

      --model DIR         run this model (esft or Hugging Face directory; frozen, weights memory-mapped)
                          forward only over samples of a token dataset and record its routing
      --data DATA.h5      the task's token dataset (esft-tokens, see docs/formats.md); only train rows
                          are used; its vocab_size must not exceed the model's
      --tokens N|all      score about N tokens: the train samples are shuffled with --seed and taken in
                          that order until their tokens reach N (so slightly more than N may count);
                          all: every train sample. Every token of a chosen sample counts, each
                          attributed to its sample; the model runs on the whole rows holding them (the
                          context of training), but other tokens of those rows do not count
      --seed S            seed of the sample shuffle (default 0)
      --batch-rows B      rows per forward pass (default 4); ranks take contiguous runs of batches
      --threads T         threads per rank for kernels and OpenBLAS (0 or absent: the cores it may use)
    \(GEMMLayer.helpLines)
      --score-per-sample  the reference's scoring (scripts/expert/get_expert_scores.py): every sample of the
                          dataset (train and validation rows: the reference reads the whole file) shuffled as
                          CPython's random.seed(S); random.shuffle(...) does; reference process r of W takes
                          samples r, r+W, ... until it has ⌊N/W⌋ tokens (the crossing sample kept); each sample
                          then runs alone (its own forward pass, no packed neighbours). Prepare the data with
                          --pack whole and no --drop-bos so stored samples are whole (BOS first)
      --reference-ranks W the reference's process count for that choice (default 4, its eval_expert.sh);
                          independent of this job's ranks, which split the chosen samples
      --routing-logs DIR  with --score-per-sample: also write DIR/expert_weights_<layer>.txt for every MoE layer in
                          the reference's format (one line per scored sample, in the order above; weights are the
                          gate scores g of docs/esft-method.md §1 with 9 decimals); --from-logs DIR reads them back
                          to the same scores. DIR must not exist; it appears only when complete
      --recipe R          esft (default) or reference: --score-per-sample with --seed 5934875 (its random.seed)
      --from-logs DIR     score the routing logs the reference implementation (deepseek-ai/ESFT) writes:
                          DIR/expert_weights_<layer>.txt for every layer 1...N; each line one sample: its
                          tokens' top-K expert ids (token-major, tab separated), an empty field, then the
                          matching gate weights. Every token on a line counts.
      --top-k K           experts per token in the logs (default 6, as DeepSeek-V2-Lite)
      --experts E         routed experts per layer (default 64, as DeepSeek-V2-Lite)
      --normalize MODE    samples (default, the paper): score = mean over samples of the per-token mean
                          within each sample; tokens: pooled over all tokens, as the reference's shipped
                          summary.json files
      --out FILE          the scores file (JSON, format esft-scores version 1, see docs/esft-method.md);
                          written atomically, nothing is left behind on error

    With --model, progress goes to stderr on rank 0; rank 0 alone writes SCORES; an error on any rank
    ends the whole job with that rank's message and a non-zero status, and no file is written.
    """

    /// Routing statistics and where they came from.
    struct ScoreInput {
        var statistics: RoutingStatistics
        var source: String
        var modelFingerprint: String?
        var dataDigest: String?
        var seed: Int?
        var ranks: Int
    }

    static func run(_ argv: [String]) throws {
        var args = Arguments(argv, command: "score")
        if args.wantsHelp { print(help); return }
        let out = URL(fileURLWithPath: try args.required("--out"))
        let normalizeName = try args.option("--normalize") ?? ScoreNormalization.samples.rawValue
        guard let normalize = ScoreNormalization(rawValue: normalizeName) else {
            throw ESFTError("score: --normalize must be samples or tokens, got '\(normalizeName)'")
        }
        let logs = try args.option("--from-logs"), model = try args.option("--model")
        let data = try args.option("--data"), routingLogs = try args.option("--routing-logs")
        if let routingLogs {
            guard !FileManager.default.fileExists(atPath: routingLogs) else {
                throw ESFTError("score: --routing-logs \(routingLogs) already exists; choose a new directory (nothing was written)")
            }
            args.restore("--routing-logs", routingLogs)
        }
        try OutputGuard.check(outputs: [.init("--out", out.path)] + (routingLogs.map { [.init("--routing-logs", $0)] } ?? []),
                              inputs: [("--from-logs", logs), ("--model", model), ("--data", data)].compactMap { n, p in p.map { .init(n, $0) } })
        if let data { args.restore("--data", data) }
        switch (logs, model) {
        case let (logs?, nil):
            print(try write(try fromLogs(URL(fileURLWithPath: logs), &args), normalize: normalize, to: out))
        case let (nil, model?):
            // Runs under mpirun too: every rank computes, rank 0 reduces and writes.
            try ModelScoring.run(try ModelScoring.options(model: model, &args), normalize: normalize, out: out)
        case (_?, _?):
            throw ESFTError("score: give either --model (with --data) or --from-logs, not both")
        case (nil, nil):
            throw ESFTError("score: --model DIR --data DATA.h5 --tokens N, or --from-logs DIR, is required (see esft score --help)")
        }
    }

    /// Scores from statistics, written atomically; returns the summary line.
    static func write(_ input: ScoreInput, normalize: ScoreNormalization, to out: URL) throws -> String {
        let scores = try RelevanceScores(statistics: input.statistics, normalize: normalize, source: input.source,
                                         modelFingerprint: input.modelFingerprint, dataDigest: input.dataDigest,
                                         seed: input.seed, ranks: input.ranks)
        try AtomicWrite.write(scores.jsonData(), to: out)
        let m = scores.metadata
        return "scored \(m.layers.count) MoE layers × \(m.experts) experts (top-\(m.topK)) over \(m.samples) samples, \(m.tokens) tokens; normalize \(m.normalize.rawValue); wrote \(out.path)"
    }

    static func fromLogs(_ dir: URL, _ args: inout Arguments) throws -> ScoreInput {
        let k = try args.int("--top-k", default: 6, min: 1)!
        let e = try args.int("--experts", default: 64, min: 1)!
        try args.finish()
        guard k <= e else { throw ESFTError("score: --top-k \(k) exceeds --experts \(e)") }
        let logs = try ReferenceRoutingLogs(directory: dir, topK: k, experts: e)
        return ScoreInput(statistics: try logs.statistics(), source: "reference routing logs \(dir.path)",
                          modelFingerprint: nil, dataDigest: logs.digest, seed: nil, ranks: 1)
    }
}

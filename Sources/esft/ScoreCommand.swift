import ESFTKernels
import ESFTMethod
import Foundation

/// `esft score`: routing statistics from some source → relevance scores file. Each source (reference
/// logs now, a model run on a dataset later) is a function returning `ScoreInput`; the scoring and
/// writing are shared.
enum ScoreCommand {
    static let help = """
    Usage: esft score --from-logs DIR [--top-k K] [--experts E] [--normalize samples|tokens] --out SCORES.json

    Measures how much a task uses each routed expert of each MoE layer (ESFT relevance scores: the
    average gate score and the token selection ratio) and writes them to a scores file for esft select.

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

    Scoring by running a model on a dataset is not available yet.
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
        let input: ScoreInput
        if let logs = try args.option("--from-logs") {
            input = try fromLogs(URL(fileURLWithPath: logs), &args)
        } else {
            throw ESFTError("score: --from-logs DIR is required (scoring by running a model is not available yet; see esft score --help)")
        }

        let s = input.statistics
        let scores = try RelevanceScores(statistics: s, normalize: normalize, source: input.source,
                                         modelFingerprint: input.modelFingerprint, dataDigest: input.dataDigest,
                                         seed: input.seed, ranks: input.ranks)
        try writeFile(scores.jsonData(), to: out)
        let m = scores.metadata
        print("scored \(m.layers.count) MoE layers × \(m.experts) experts (top-\(m.topK)) over \(m.samples) samples, \(m.tokens) tokens; normalize \(m.normalize.rawValue); wrote \(out.path)")
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

import ESFTBase
import ESFTData
import ESFTKernels
import ESFTModel
import ESFTParallel
import Foundation

/// `esft eval`'s two metrics over a rank's round-robin share; rank 0 gets every record's line in record
/// order and the summary (nil elsewhere).
public enum Evaluation {
    public struct Outcome {
        public let lines: [String]
        public let summary: [String: Any]
    }

    /// Greedy completion of each prompt, scored with the reference's intent metric against raw_answers[0].
    /// Lines: `{"example": {"prompt", "raw_prediction", "raw_answers"}, "score"}` (the reference's), plus
    /// `"note"` when the prediction could not be compared.
    public static func exactJSON(_ records: [EvalRecord], completer: Completer, comm: Communicator,
                                 progress: @escaping (String) -> Void) throws -> Outcome? {
        let mine = roundRobinShare(count: records.count, rank: comm.rank, ranks: comm.size)
        let start = Date()
        let completions = try completer.complete(mine.map { records[$0].prompt }) { done in
            progress("esft eval: rank \(comm.rank): \(done) / \(mine.count) records")
        }
        var lines: [(index: Int, text: String)] = [], sums = [0.0, 0.0, 0.0]  // score, stopped, generated tokens
        for (i, c) in zip(mine, completions) {
            let r = records[i], m = ExactJSONMetric.score(rawPrediction: c.text, answer: r.rawAnswers[0])
            sums[0] += m.score; sums[1] += c.stopped ? 1 : 0; sums[2] += Double(c.tokens.count)
            lines.append((i, exactJSONResultLine(prompt: r.prompt, prediction: c.text, answers: r.rawAnswers, result: m)))
        }
        try comm.allReduceSum(&sums, tag: "eval")
        let seconds = try comm.maxAllReduce(Date().timeIntervalSince(start), tag: "eval")
        guard let ordered = try gatherInRecordOrder(lines, comm: comm, tag: "eval results") else { return nil }
        return Outcome(lines: ordered, summary: [
            "metric": "exact-json", "records": records.count, "score": sums[0] / Double(records.count), "correct": Int(sums[0]),
            "stopped_by_eos": Int(sums[1]), "generated_tokens": Int(sums[2]), "max_new_tokens": completer.options.maxNewTokens,
            "ranks": comm.size, "seconds": seconds, "generated_tokens_per_s": sums[2] / max(seconds, 1e-9),
        ])
    }

    /// Held-out loss: each record formatted as `esft data prepare` formats it (chat or text), run alone,
    /// cross-entropy over its trained tokens. A record longer than max_position_embeddings keeps its last
    /// tokens (as packing does). Lines: `{"line", "loss", "target_tokens"}`; the summary has the loss over
    /// all target tokens and the mean of the records' losses.
    public static func loss(_ input: JSONLInput, model: MoETransformer, tokenizer: LoadedTokenizer, comm: Communicator,
                            progress: @escaping (String) -> Void) throws -> Outcome? {
        let records = input.records
        let mine = roundRobinShare(count: records.count, rank: comm.rank, ranks: comm.size)
        let limit = model.config.maxPositionEmbeddings, start = Date()
        var lines: [(index: Int, text: String)] = [], sums = [0.0, 0.0, 0.0, 0.0]  // CE, targets, Σ record means, truncated
        var lastReport = Date.distantPast
        for (done, i) in mine.enumerated() {
            var (ids, labels) = ChatFormat.tokenize(records[i].parts, with: tokenizer)
            if ids.count > limit { ids = Array(ids.suffix(limit)); labels = Array(labels.suffix(limit)); sums[3] += 1 }
            if let bad = ids.first(where: { Int($0) >= model.config.vocabSize }) {
                throw ESFTError("\(input.path):\(records[i].line): token id \(bad) is not below the model's vocab_size \(model.config.vocabSize); wrong tokenizer?")
            }
            let r = try model.forward(TokenBatch(batch: 1, seqLen: ids.count, inputIds: ids, labels: labels), training: false)
            let mean = r.targetCount > 0 ? r.crossEntropySum / Double(r.targetCount) : Double.nan
            sums[0] += r.crossEntropySum; sums[1] += Double(r.targetCount); if r.targetCount > 0 { sums[2] += mean }
            lines.append((i, "{\"line\": \(records[i].line), \"loss\": \(r.targetCount > 0 ? JSONText.number(mean) : "null"), \"target_tokens\": \(r.targetCount)}"))
            if Date().timeIntervalSince(lastReport) >= 2 || done + 1 == mine.count {
                lastReport = Date(); progress("esft eval: rank \(comm.rank): \(done + 1) / \(mine.count) records")
            }
        }
        let scored = Double(try comm.allReduceSum(Int64(lines.filter { !$0.text.contains("\"loss\": null") }.count), tag: "eval"))
        try comm.allReduceSum(&sums, tag: "eval")
        let seconds = try comm.maxAllReduce(Date().timeIntervalSince(start), tag: "eval")
        guard let ordered = try gatherInRecordOrder(lines, comm: comm, tag: "eval results") else { return nil }
        guard sums[1] > 0 else { throw ESFTError("\(input.path): no record has a trained token to score") }
        return Outcome(lines: ordered, summary: [
            "metric": "loss", "records": records.count, "loss": sums[0] / sums[1], "mean_record_loss": sums[2] / scored,
            "target_tokens": Int(sums[1]), "truncated": Int(sums[3]), "ranks": comm.size, "seconds": seconds,
        ])
    }
}

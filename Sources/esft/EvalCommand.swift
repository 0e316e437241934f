import ESFTBase
import ESFTData
import ESFTEval
import ESFTParallel
import Foundation

enum EvalCommand {
    static let help = """
    Usage: esft eval --model DIR [--trained FILE|DIR] --tokenizer T --data FILE.jsonl --metric exact-json|loss
                     --out RESULTS.jsonl [--max-new-tokens N] [--batch B] [--no-bos] [--recipe esft|reference]
           mpirun -n R esft eval ...   (records split round-robin, results gathered by rank 0 in record order)
           esft eval --rescore RESULTS.jsonl --metric exact-json --out RESCORED.jsonl   (no model: score existing
                     predictions again, e.g. the reference's results/completions/*/intent.jsonl)

    --metric exact-json: the reference's evaluation files ({"prompt", "raw_answers", ...}, e.g.
      datasets/eval/intent.jsonl): greedy completion of each prompt (esft generate), scored as the reference's
      intent metric: 1 when the prediction's JSON has the answer's intent and exactly its slots, else 0.
      Each line of RESULTS: {"example": {"prompt", "raw_prediction", "raw_answers"}, "score"} (as the
      reference writes), plus "note" when the prediction could not be compared.
    --metric loss: any chat/text JSONL (esft data prepare's input): each record formatted as for training,
      run alone, cross-entropy over its trained tokens; lines {"line", "loss", "target_tokens"}. Held-out loss
      on other tasks' data measures general-ability retention without an LLM judge. --recipe reference formats
      as the reference does (stripped contents, BOS label).
    The summary (records, score or loss, tokens, time) is printed and written to RESULTS.summary.json.

      --data FILE.jsonl     the records
      --metric M            exact-json or loss
      --out RESULTS.jsonl   one line per record, in record order (written under a temporary name)
    \(InferenceSetup.optionsHelp)
    """

    static func run(_ argv: [String]) throws {
        var args = Arguments(argv, command: "eval")
        if args.wantsHelp { print(help); return }
        if let rescore = try args.option("--rescore") { return try self.rescore(rescore, &args) }
        let setup = try InferenceSetup(&args)
        let data = try args.required("--data"), metric = try args.required("--metric"), out = try args.required("--out")
        let recipe = try args.recipe()
        try args.finish()
        guard ["exact-json", "loss"].contains(metric) else { throw ESFTError("eval: --metric must be exact-json or loss, got '\(metric)'") }
        let outURL = URL(fileURLWithPath: out), summaryURL = summaryPath(outURL)
        var inputs: [OutputGuard.Item] = [.init("--data", data), .init("--model", setup.modelPath)]
        if let t = setup.trainedPath { inputs.append(.init("--trained", t)) }
        if let t = setup.tokenizerSpec, t != "bytes" { inputs.append(.init("--tokenizer", t)) }
        try OutputGuard.check(outputs: [.init("--out", outURL.path), .init("the summary", summaryURL.path)], inputs: inputs)
        // Every input is read and checked before MPI starts and before anything is written.
        let records = metric == "exact-json" ? try EvalRecord.load(data) : []
        let chat = metric == "loss" ? try JSONLInput(path: data, skipBad: false, style: recipe == .reference ? .reference : .esft) : nil
        guard setup.tokenizerSpec != nil else { throw ESFTError("eval: --tokenizer T is required") }
        let (model, loadedTokenizer, format) = try setup.load()
        let tokenizer = loadedTokenizer!
        let comm = try Communicators.fromEnvironment()
        let say: (String) -> Void = { line in if comm.rank == 0 { FileHandle.standardError.write(Data((line + "\n").utf8)) } }
        runRanked(comm) {
            say("esft eval: \(format); \(metric) on \(data); \(comm.size) rank(s)")
            let outcome: Evaluation.Outcome?
            if let chat {
                outcome = try Evaluation.loss(chat, model: model, tokenizer: tokenizer, comm: comm, progress: say)
            } else {
                let completer = try Completer(model: model, tokenizer: tokenizer, options: setup.completion)
                outcome = try Evaluation.exactJSON(records, completer: completer, comm: comm, progress: say)
            }
            guard let outcome else { return }
            var summary = outcome.summary
            summary["data"] = data; summary["model"] = setup.modelPath; summary["trained"] = setup.trainedPath ?? NSNull()
            let summaryData = try JSONSerialization.data(withJSONObject: summary, options: [.prettyPrinted, .sortedKeys])
            try AtomicWrite.write(Data(outcome.lines.map { $0 + "\n" }.joined().utf8), to: outURL)
            try AtomicWrite.write(summaryData, to: summaryURL)
            print(String(decoding: summaryData, as: UTF8.self))
            print("wrote \(outURL.path) and \(summaryURL.path)")
        }
        runRanked(comm) { try comm.finalize() }
    }

    /// Scores `{"example": {"prompt", "raw_prediction", "raw_answers"}, "score"?}` lines again; the summary
    /// says how many recorded scores agree with ours.
    static func rescore(_ path: String, _ args: inout Arguments) throws {
        let metric = try args.required("--metric"), out = try args.required("--out")
        try args.finish()
        guard metric == "exact-json" else { throw ESFTError("eval: --rescore scores predictions with --metric exact-json, got '\(metric)'") }
        let outURL = URL(fileURLWithPath: out), summaryURL = summaryPath(outURL)
        try OutputGuard.check(outputs: [.init("--out", outURL.path), .init("the summary", summaryURL.path)], inputs: [.init("--rescore", path)])
        var lines: [String] = [], total = 0.0, recorded = 0, agree = 0
        for (_, r) in try jsonLines(path, what: "result line") {
            let example = try r.field("example")
            let prompt = try example.field("prompt").string(), prediction = try example.field("raw_prediction").string()
            let answers = try example.field("raw_answers").items().map { try $0.string() }
            guard let answer = answers.first else { throw ESFTError("\(r.source): example.raw_answers is empty") }
            let m = ExactJSONMetric.score(rawPrediction: prediction, answer: answer)
            total += m.score
            if let old = try r.optionalField("score") { recorded += 1; if try old.double() == m.score { agree += 1 } }
            lines.append(exactJSONResultLine(prompt: prompt, prediction: prediction, answers: answers, result: m) + "\n")
        }
        let summary: [String: Any] = ["metric": metric, "rescored": path, "records": lines.count, "score": total / Double(lines.count),
                                      "correct": Int(total), "recorded_scores": recorded, "recorded_scores_agreeing": agree]
        let summaryData = try JSONSerialization.data(withJSONObject: summary, options: [.prettyPrinted, .sortedKeys])
        try AtomicWrite.write(Data(lines.joined().utf8), to: outURL)
        try AtomicWrite.write(summaryData, to: summaryURL)
        print(String(decoding: summaryData, as: UTF8.self))
    }

    /// RESULTS.jsonl → RESULTS.summary.json.
    static func summaryPath(_ out: URL) -> URL {
        let base = out.pathExtension == "jsonl" ? out.deletingPathExtension() : out
        return base.appendingPathExtension("summary.json")
    }
}

import ESFTBase
import ESFTData
import ESFTEval
import Foundation

enum GenerateCommand {
    static let help = """
    Usage: esft generate --model DIR [--trained FILE|DIR] --tokenizer T (--prompt TEXT ... | --prompts FILE.jsonl)
                         [--max-new-tokens N] [--batch B] [--no-bos] [--out FILE.jsonl]
           esft generate --model DIR --prompt-ids 1,2,3 ... [--stop-id ID ...] [--max-new-tokens N] [--out FILE.jsonl]

    Greedy generation (argmax, as do_sample=False) with a KV cache: each prompt runs once, then every new
    token costs one step of one token per sequence; prompts are decoded B at a time and stop at EOS or
    after N new tokens. Prints each completion, or writes one JSON line per prompt to --out:
    {"prompt", "completion", "tokens" (new ids, EOS included when it stopped), "stopped"}.

      --prompt TEXT         a prompt (repeat for several)
      --prompts FILE.jsonl  prompts from a JSONL file, each line {"prompt": ...} (the reference's eval files)
      --prompt-ids IDS      a prompt as comma-separated token ids, used as given (no BOS added; repeat for several;
                            for checking against other implementations, no tokenizer needed)
      --stop-id ID          with --prompt-ids: a token that ends a sequence (repeat; default: --tokenizer's EOS if
                            given, else none)
      --out FILE.jsonl      write the completions here (under a temporary name, renamed when complete)
    \(InferenceSetup.optionsHelp)
    """

    static func parseIds(_ text: String) throws -> [Int32] {
        let ids = text.split(separator: ",").map { Int32($0.trimmingCharacters(in: .whitespaces)) }
        guard !ids.isEmpty, ids.allSatisfy({ ($0 ?? -1) >= 0 }) else { throw ESFTError("generate: --prompt-ids must be comma-separated token ids, got '\(text)'") }
        return ids.map { $0! }
    }

    static func run(_ argv: [String]) throws {
        var args = Arguments(argv, command: "generate")
        if args.wantsHelp { print(help); return }
        let setup = try InferenceSetup(&args)
        var prompts: [String] = [], idPrompts: [[Int32]] = [], stopIds: Set<Int32> = []
        while let p = try args.firstOption("--prompt") { prompts.append(p) }
        while let p = try args.firstOption("--prompt-ids") { idPrompts.append(try parseIds(p)) }
        while let s = try args.firstOption("--stop-id") {
            guard let id = Int32(s), id >= 0 else { throw ESFTError("generate: --stop-id must be a token id, got '\(s)'") }
            stopIds.insert(id)
        }
        let file = try args.option("--prompts"), out = try args.option("--out")
        try args.finish()
        if let file { prompts += try EvalRecord.loadPrompts(file) }
        guard prompts.isEmpty != idPrompts.isEmpty else {
            throw ESFTError("generate: give text prompts (--prompt TEXT, --prompts FILE.jsonl) or --prompt-ids, not both or neither (see esft generate --help)")
        }
        if !prompts.isEmpty && setup.tokenizerSpec == nil { throw ESFTError("generate: text prompts need --tokenizer T") }
        if let out {
            var inputs: [OutputGuard.Item] = [.init("--model", setup.modelPath)]
            if let file { inputs.append(.init("--prompts", file)) }
            if let t = setup.trainedPath { inputs.append(.init("--trained", t)) }
            if let t = setup.tokenizerSpec, t != "bytes" { inputs.append(.init("--tokenizer", t)) }
            try OutputGuard.check(outputs: [.init("--out", out)], inputs: inputs)
        }
        let (model, tokenizer, format) = try setup.load()
        let completer = try Completer(model: model, tokenizer: tokenizer, options: setup.completion)
        let count = prompts.count + idPrompts.count
        FileHandle.standardError.write(Data("esft generate: \(format); \(count) prompt(s), ≤ \(setup.completion.maxNewTokens) new tokens, batches of \(setup.completion.batch)\n".utf8))
        let start = Date()
        let progress = { (done: Int) in FileHandle.standardError.write(Data("esft generate: \(done) / \(count)\n".utf8)) }
        let results = idPrompts.isEmpty
            ? try completer.complete(prompts, progress: progress)
            : try completer.complete(ids: idPrompts, stop: stopIds.isEmpty ? Set(tokenizer.map { [$0.eosId] } ?? []) : stopIds, progress: progress)
        if prompts.isEmpty { prompts = idPrompts.map { $0.map(String.init).joined(separator: ",") } }
        let seconds = Date().timeIntervalSince(start), generated = results.reduce(0) { $0 + $1.tokens.count }
        if let out {
            let lines = zip(prompts, results).map { p, r in
                "{\"prompt\": \(JSONText.string(p)), \"completion\": \(JSONText.string(r.text)), \"tokens\": \(JSONText.intList(r.tokens.map(Int.init))), \"stopped\": \(r.stopped)}\n"
            }
            try AtomicWrite.write(Data(lines.joined().utf8), to: URL(fileURLWithPath: out))
            print("wrote \(out): \(results.count) completion(s)")
        } else {
            for (p, r) in zip(prompts, results) { print("--- prompt: \(p)\n\(r.text)") }
        }
        print(String(format: "generated %d tokens in %.2f s (%.1f tokens/s)", generated, seconds, Double(generated) / max(seconds, 1e-9)))
    }
}

extension EvalRecord {
    /// The "prompt" of every non-blank line (other fields are not needed to generate).
    static func loadPrompts(_ path: String) throws -> [String] {
        try jsonLines(path, what: "prompt record").map { try $0.reader.field("prompt").string() }
    }
}

import ESFTBase
import ESFTData
import ESFTEval
import Foundation

enum GenerateCommand {
    static let help = """
    Usage: esft generate --model DIR [--trained FILE|DIR] --tokenizer T (--prompt TEXT ... | --prompts FILE.jsonl)
                         [--max-new-tokens N] [--batch B] [--no-bos] [--out FILE.jsonl]

    Greedy generation (argmax, as do_sample=False) with a KV cache: each prompt runs once, then every new
    token costs one step of one token per sequence; prompts are decoded B at a time and stop at EOS or
    after N new tokens. Prints each completion, or writes one JSON line per prompt to --out:
    {"prompt", "completion", "tokens" (new ids, EOS included when it stopped), "stopped"}.

      --prompt TEXT         a prompt (repeat for several)
      --prompts FILE.jsonl  prompts from a JSONL file, each line {"prompt": ...} (the reference's eval files)
      --out FILE.jsonl      write the completions here (under a temporary name, renamed when complete)
    \(InferenceSetup.optionsHelp)
    """

    static func run(_ argv: [String]) throws {
        var args = Arguments(argv, command: "generate")
        if args.wantsHelp { print(help); return }
        let setup = try InferenceSetup(&args)
        var prompts: [String] = []
        while let p = try args.firstOption("--prompt") { prompts.append(p) }
        let file = try args.option("--prompts"), out = try args.option("--out")
        try args.finish()
        if let file { prompts += try EvalRecord.loadPrompts(file) }
        guard !prompts.isEmpty else { throw ESFTError("generate: give --prompt TEXT or --prompts FILE.jsonl (see esft generate --help)") }
        if let out, let file, URL(fileURLWithPath: out).standardizedFileURL == URL(fileURLWithPath: file).standardizedFileURL {
            throw ESFTError("generate: --out \(out) is the --prompts file; choose another output")
        }
        let (model, tokenizer, format) = try setup.load()
        let completer = try Completer(model: model, tokenizer: tokenizer, options: setup.completion)
        FileHandle.standardError.write(Data("esft generate: \(format); \(prompts.count) prompt(s), ≤ \(setup.completion.maxNewTokens) new tokens, batches of \(setup.completion.batch)\n".utf8))
        let start = Date()
        let results = try completer.complete(prompts) { done in
            FileHandle.standardError.write(Data("esft generate: \(done) / \(prompts.count)\n".utf8))
        }
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
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path)) } catch { throw ESFTError("\(path): cannot read (\(error.localizedDescription))") }
        var prompts: [String] = []
        for (i, line) in data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).enumerated()
        where !line.allSatisfy({ $0 == 0x20 || $0 == 0x09 || $0 == 0x0D }) {
            prompts.append(try JSONReader.parse(Data(line), source: "\(path):\(i + 1)", what: "prompt record").field("prompt").string())
        }
        guard !prompts.isEmpty else { throw ESFTError("\(path): no prompts (the file is empty)") }
        return prompts
    }
}

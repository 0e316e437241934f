import ESFTData
import ESFTKernels
import Foundation

enum DataCommand {
    static let help = """
    Usage: esft data prepare --tokenizer T --input FILE.jsonl [--input2 GENERAL.jsonl --mix A:B] --seq-len N
                             --out D.h5 [--validation-fraction F] [--seed S] [--drop-bos P] [--skip-bad]
                             [--model DIR] [--bos-token TOK] [--eos-token TOK] [--pad-token TOK]
                             [--recipe esft|reference] [--strip] [--bos-label] [--pack whole|overflow-cut]

    Turns chat or text JSONL into a packed token dataset (docs/data.md). Each line is
    {"messages": [{"role": "user"|"assistant"|"system", "content": ...}, ...]} or {"text": ...}.
    Chat samples: BOS "User: {q}\\n\\nAssistant:" masked (label -100), " {a}" EOS trained, per turn;
    text samples: BOS text EOS, all trained. Samples are packed greedily in order into rows of N
    tokens (padded with PAD, label -100); a sample longer than N keeps its last N tokens.

      --tokenizer T            'bytes' or a tokenizer.json (or a directory holding one)
      --input FILE             the task data (JSONL)
      --input2 FILE            a second source (e.g. general data), mixed in with --mix
      --mix A:B                samples of --input : samples of --input2 (default 1:1); all of --input is used
      --seq-len N              tokens per row
      --out D.h5               output; written under a temporary name, renamed when complete
      --validation-fraction F  fraction of rows held out (default 0.05 with ≥ 20 rows, else 0)
      --seed S                 seed for mixing, drop-BOS and the split (default 0)
      --drop-bos P             probability of dropping BOS from a sample that is not first in its row
                               (default 0; the reference uses 0.2). With --pack overflow-cut: the first
                               token after the cut, drawn with Python's random as the reference does
      --recipe R               esft (default) or reference: the ESFT reference's data preparation exactly
                               (deepseek-ai/ESFT utils.py + train.py): --strip --bos-label --pack overflow-cut
                               --drop-bos 0.2 --seed 5934875 --validation-fraction 0.02 rounded as
                               torch's random_split [int(0.98·rows), rest]; the options below override it
      --strip                  strip whitespace around user and assistant contents (Python's str.strip)
      --bos-label              BOS is a trained target (label = its id), as in the reference
      --pack M                 whole (default): a sample that does not fit pads the row and starts the next;
                               overflow-cut (reference): it is cut to its last tokens and fills the row
      --skip-bad               skip (and count) bad lines instead of failing on the first
      --model DIR              check every id is below DIR/config.json's vocab_size and record it
      --bos-token/--eos-token/--pad-token TOK
                               special tokens by spelling, or an id as a plain integer (default: found among the tokenizer's
                               tokens, e.g. <｜begin▁of▁sentence｜>, <s>, <|endoftext|>; PAD defaults to EOS)
    """

    static func run(_ argv: [String]) throws {
        guard let sub = argv.first, sub != "--help", sub != "-h" else { print(help); return }
        guard sub == "prepare" else { throw ESFTError("data: unknown subcommand '\(sub)' (see esft data --help)") }
        var args = Arguments(Array(argv.dropFirst()), command: "data prepare")
        if args.wantsHelp { print(help); return }
        let spec = try args.required("--tokenizer")
        let input = try args.required("--input"), input2 = try args.option("--input2")
        let mixText = try args.option("--mix")
        let seqLen = try args.int("--seq-len", min: 1)
        let out = try args.required("--out")
        let fraction = try args.double("--validation-fraction")
        let seedGiven = try args.int("--seed")
        let dropGiven = try args.double("--drop-bos")
        let skipBad = args.flag("--skip-bad")
        let modelDir = try args.option("--model")
        let bos = try args.option("--bos-token"), eos = try args.option("--eos-token"), pad = try args.option("--pad-token")
        let recipe = try args.recipe()
        let strip = args.flag("--strip"), bosLabel = args.flag("--bos-label")
        let packText = try args.option("--pack")
        try args.finish()
        try OutputGuard.check(outputs: [.init("--out", out)],
                              inputs: [("--input", input), ("--input2", input2), ("--tokenizer", spec), ("--model", modelDir)]
                                  .compactMap { n, p in p.map { .init(n, $0) } }.filter { $0.name != "--tokenizer" || $0.path != "bytes" })
        guard let seqLen else { throw ESFTError("data prepare: --seq-len is required (see esft data --help)") }
        // Rows are built whole in memory; no model has a context beyond 2^24 tokens (ModelSizes.limits).
        guard seqLen <= 1 << 24 else { throw ESFTError("data prepare: --seq-len \(seqLen) is beyond any model's context (at most \(1 << 24))") }
        if mixText != nil && input2 == nil { throw ESFTError("data prepare: --mix needs --input2") }

        var options = DatasetPreparation.Options(inputs: [input] + (input2.map { [$0] } ?? []), seqLen: seqLen,
                                                 output: URL(fileURLWithPath: out))
        options.mix = try mixText.map(parseMix) ?? (1, 1)
        let reference = recipe == .reference
        let seed = seedGiven ?? (reference ? Recipe.referenceSeed : 0)
        options.validationFraction = fraction ?? (reference ? 0.02 : nil)
        options.splitRounding = reference ? .reference : .nearest
        options.seed = UInt64(seed)
        options.dropBOS = dropGiven ?? (reference ? 0.2 : 0)
        options.chatStyle = ChatStyle(strip: strip || reference, bosLabel: bosLabel || reference)
        if let packText {
            guard let mode = PackMode(rawValue: packText) else {
                throw ESFTError("data prepare: --pack must be whole or overflow-cut, got '\(packText)'")
            }
            options.packMode = mode
        } else {
            options.packMode = reference ? .overflowCut : .whole
        }
        options.skipBad = skipBad
        options.modelVocab = try modelDir.map(modelVocab)
        let tokenizer = try LoadedTokenizer.load(spec, bos: bos, eos: eos, pad: pad)
        let summary = try DatasetPreparation.run(options, tokenizer: tokenizer, progress: progressLine("data prepare"))
        for w in summary.warnings { FileHandle.standardError.write("esft data prepare: warning: \(w)\n".data(using: .utf8)!) }
        print("wrote \(out) (\(tokenizer.kind), seq_len \(seqLen), seed \(seed), recipe \(recipe.rawValue), pack \(options.packMode.rawValue))")
        print(summary.text)
    }

    static func parseMix(_ s: String) throws -> (Int, Int) {
        let parts = s.split(separator: ":").map { Int($0) }
        guard parts.count == 2, let a = parts[0], let b = parts[1], a > 0, b >= 0 else {
            throw ESFTError("data prepare: --mix must be A:B with integers A > 0, B ≥ 0, got '\(s)'")
        }
        return (a, b)
    }

    /// vocab_size from DIR/config.json (a Hugging Face or esft model directory).
    static func modelVocab(_ dir: String) throws -> (size: Int, file: String) {
        let file = URL(fileURLWithPath: dir).appendingPathComponent("config.json").path
        guard FileManager.default.fileExists(atPath: file) else { throw ESFTError("\(file): no such file (is --model a model directory?)") }
        let field = try JSONReader.load(URL(fileURLWithPath: file), what: "model config").field("vocab_size")
        let v = try field.int()
        guard v > 0 else { throw field.fail("must be a positive integer, got \(field.describe)") }
        return (v, file)
    }
}

// `esft data prepare`: JSONL files -> (mix) -> tokens -> packed rows -> split -> token dataset.
import ESFTBase
import Foundation

public struct DatasetPreparation {
    public struct Options {
        public var inputs: [String]           // one file, or two with `mix`
        public var mix: (Int, Int) = (1, 1)
        public var seqLen: Int
        public var output: URL
        public var validationFraction: Double? // nil: 0.05 if rows >= 20, else 0
        /// How many rows the fraction holds out: esft rounds f·rows; the reference (torch `random_split`
        /// with [int(rows·(1−f)), rest]) truncates the train count.
        public var splitRounding: SplitRounding = .nearest
        public var chatStyle: ChatStyle = .esft
        public var packMode: PackMode = .whole
        public var seed: UInt64 = 0
        public var dropBOS: Double = 0
        public var skipBad = false
        /// vocab_size of the model the data is for, and its config.json (for messages).
        public var modelVocab: (size: Int, file: String)? = nil
        public init(inputs: [String], seqLen: Int, output: URL) { self.inputs = inputs; self.seqLen = seqLen; self.output = output }
    }

    public enum SplitRounding: String, Sendable { case nearest, reference }

    public struct Summary {
        public var samples: [Int] = []        // per source
        public var skipped: [Int] = []
        public var skippedReasons: [String] = []
        public var tokens = 0                 // non-pad tokens
        public var trainedTokens = 0
        public var totalTokens = 0            // rows * seqLen
        public var trainRows = 0, validationRows = 0
        public var truncated = 0, droppedBOS = 0
        public var warnings: [String] = []

        public var text: String {
            let pct = { (a: Int, b: Int) in b == 0 ? "0.0%" : String(format: "%.1f%%", 100 * Double(a) / Double(b)) }
            var lines = ["samples: \(samples.reduce(0, +))" + (samples.count > 1 ? " (source 0: \(samples[0]), source 1: \(samples[1]))" : ""),
                         "tokens: \(tokens) (+ \(totalTokens - tokens) padding)",
                         "rows: \(trainRows + validationRows) (train \(trainRows), validation \(validationRows))",
                         "trained tokens: \(trainedTokens) = \(pct(trainedTokens, tokens)) of non-pad tokens, \(pct(trainedTokens, totalTokens)) of all tokens",
                         "truncated samples: \(truncated)",
                         "dropped BOS: \(droppedBOS)",
                         "skipped bad lines: \(skipped.reduce(0, +))"]
            lines += skippedReasons.map { "  skipped: \($0)" }
            return lines.joined(separator: "\n")
        }
    }

    public static func run(_ o: Options, tokenizer: LoadedTokenizer, progress: (String) -> Void = { _ in }) throws -> Summary {
        // Invariant: `esft data prepare` parses one or two inputs and --seq-len ≥ 1 before calling.
        precondition((1...2).contains(o.inputs.count) && o.seqLen > 0)
        if let f = o.validationFraction, !(0..<1).contains(f) { throw ESFTError("--validation-fraction must be in [0, 1), got \(f)") }
        var isDirectory: ObjCBool = false
        let parent = o.output.deletingLastPathComponent().path
        guard FileManager.default.fileExists(atPath: parent, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw ESFTError("\(o.output.path): the directory \(parent) does not exist")  // fail before the work, not after
        }
        guard (0...1).contains(o.dropBOS) else { throw ESFTError("--drop-bos must be in [0, 1], got \(o.dropBOS)") }
        if let (v, file) = o.modelVocab {
            for (name, id) in [("BOS", tokenizer.bosId), ("EOS", tokenizer.eosId), ("PAD", tokenizer.padId)] where Int(id) >= v {
                throw ESFTError("\(file): the tokenizer's \(name) id \(id) is not below the model's vocab_size \(v)")
            }
        }
        var summary = Summary()
        var files = [JSONLInput]()
        for path in o.inputs {
            let input = try JSONLInput(path: path, skipBad: o.skipBad, style: o.chatStyle)
            progress("\(path): \(input.records.count) samples from \(input.lines) lines" + (input.skipped > 0 ? ", \(input.skipped) bad lines skipped" : ""))
            files.append(input)
            summary.skipped.append(input.skipped); summary.skippedReasons += input.skippedReasons
        }
        let order = mixOrder(files.map(\.records.count), mix: o.mix, seed: o.seed, warnings: &summary.warnings)
        summary.samples = (0..<files.count).map { s in order.filter { $0.source == s }.count }

        var packer = Packer(seqLen: o.seqLen, padId: tokenizer.padId, bosId: tokenizer.bosId, mode: o.packMode, dropBOS: o.dropBOS,
                            seed: o.seed)
        for (done, item) in order.enumerated() {
            let file = files[item.source], record = file.records[item.index]
            let (ids, labels) = ChatFormat.tokenize(record.parts, with: tokenizer)
            if let (v, configFile) = o.modelVocab, let bad = ids.first(where: { Int($0) >= v }) {
                throw ESFTError("\(file.path):\(record.line): token id \(bad) is not below the model's vocab_size \(v) (\(configFile)); wrong tokenizer for this model?")
            }
            packer.add(ids: ids, labels: labels, source: item.source)
            if (done + 1) % 10_000 == 0 { progress("tokenized \(done + 1) of \(order.count) samples") }
        }
        summary.truncated = packer.truncated; summary.droppedBOS = packer.droppedBOS
        let packed = packer.finish()
        let split = splitRows(packed.rows, fraction: o.validationFraction, rounding: o.splitRounding, seed: o.seed)

        summary.totalTokens = packed.inputIds.count
        summary.tokens = packed.samples.reduce(0) { $0 + $1.length }
        summary.trainedTokens = packed.labels.lazy.filter { $0 != -100 }.count
        summary.validationRows = split.lazy.filter { $0 == 1 }.count
        summary.trainRows = packed.rows - summary.validationRows

        let metadata = TokenDataset.Metadata(
            seqLen: o.seqLen, vocabSize: o.modelVocab?.size ?? tokenizer.vocabSize, padId: tokenizer.padId,
            bosId: tokenizer.bosId, eosId: tokenizer.eosId, tokenizer: tokenizer.kind, tokenizerFingerprint: tokenizer.fingerprint,
            sourcesJSON: sourcesJSON(files, summary: summary, options: o), seed: Int64(bitPattern: o.seed))
        try TokenDataset.write(to: o.output, metadata: metadata, inputIds: packed.inputIds, labels: packed.labels,
                               split: split, samples: packed.samples)
        return summary
    }

    /// Which sample comes next: all of source 0 in file order; with a second source, round(n0 * B / A)
    /// of its samples (a seeded subset kept in file order; all of them, with a warning, if too few),
    /// interleaved by a seeded shuffle of the source labels.
    static func mixOrder(_ counts: [Int], mix: (Int, Int), seed: UInt64, warnings: inout [String]) -> [(source: Int, index: Int)] {
        if counts.count == 1 { return (0..<counts[0]).map { (0, $0) } }
        var rng = SplitMix64.stream(seed: seed, index: 3)
        let wanted = Int((Double(counts[0]) * Double(mix.1) / Double(mix.0)).rounded())
        var take = wanted
        if wanted > counts[1] {
            warnings.append("--input2 has \(counts[1]) samples, fewer than the \(wanted) that --mix \(mix.0):\(mix.1) asks for; using all of them")
            take = counts[1]
        }
        var pool = Array(0..<counts[1])
        shuffle(&pool, &rng)
        let chosen = pool.prefix(take).sorted()
        var labels = [Int](repeating: 0, count: counts[0]) + [Int](repeating: 1, count: take)
        shuffle(&labels, &rng)
        var next = [0, 0]
        return labels.map { s in
            defer { next[s] += 1 }
            return s == 0 ? (0, next[0]) : (1, chosen[next[1]])
        }
    }

    /// split[r] = 1 for validation rows: round(fraction * rows) rows (reference rounding: rows −
    /// ⌊rows·(1 − fraction)⌋) chosen by a seeded shuffle, at least one row left for training. Default
    /// fraction: 0.05 with 20 rows or more, else 0.
    static func splitRows(_ rows: Int, fraction: Double?, rounding: SplitRounding = .nearest, seed: UInt64) -> [UInt8] {
        let f = fraction ?? (rows >= 20 ? 0.05 : 0)
        let held = rounding == .nearest ? Int((f * Double(rows)).rounded()) : rows - Int(Double(rows) * (1 - f))
        let count = min(held, max(rows - 1, 0))
        var order = Array(0..<rows)
        var rng = SplitMix64.stream(seed: seed, index: 2)
        shuffle(&order, &rng)
        var split = [UInt8](repeating: 0, count: rows)
        for r in order.prefix(count) { split[r] = 1 }
        return split
    }

    static func shuffle<T>(_ a: inout [T], _ rng: inout SplitMix64) {
        guard a.count > 1 else { return }
        for i in stride(from: a.count - 1, to: 0, by: -1) { a.swapAt(i, Int(rng.next() % UInt64(i + 1))) }
    }

    static func sourcesJSON(_ files: [JSONLInput], summary: Summary, options o: Options) -> String {
        var list = [[String: Any]]()
        for (i, f) in files.enumerated() {
            list.append(["source": i, "file": URL(fileURLWithPath: f.path).lastPathComponent, "bytes": f.bytes, "digest": f.digest,
                         "lines": f.lines, "records": f.records.count, "samples": summary.samples[i], "skipped": f.skipped])
        }
        // How the rows were made, so a reader can tell an esft dataset from a reference-recipe one.
        let preparation: [String: Any] = ["pack": o.packMode.rawValue, "strip": o.chatStyle.strip, "bos_label": o.chatStyle.bosLabel,
                                          "drop_bos": o.dropBOS, "split_rounding": o.splitRounding.rawValue]
        var root: [String: Any] = ["inputs": list, "preparation": preparation]
        if files.count > 1 { root["mix"] = "\(o.mix.0):\(o.mix.1)" }
        let data = (try? JSONSerialization.data(withJSONObject: root, options: [.sortedKeys])) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self)
    }
}

import ESFTBase
import ESFTData
import ESFTKernels
import ESFTModel
import ESFTParallel
import Foundation

/// `esft generate` and `esft eval`: greedy completions of text prompts in batches through the KV-cached
/// decoder, and the metrics over them; under mpirun each rank takes records round-robin and rank 0 gathers
/// the results in record order.
public struct Completer {
    public struct Options: Sendable {
        public var maxNewTokens = 128
        public var batch = 8
        /// Put BOS before each prompt (the reference's pipeline tokenizes with add_special_tokens).
        public var addBOS = true
        public init() {}
    }

    public struct Completion: Equatable, Sendable {
        public let promptTokens: Int
        public let tokens: [Int32]
        /// The decoded new tokens without the stop token and other special tokens (the pipeline's
        /// `generated_text` with `return_full_text=False`).
        public let text: String
        public let stopped: Bool
    }

    public let model: MoETransformer
    /// For text prompts and decoded completions; id prompts need none.
    public let tokenizer: LoadedTokenizer?
    public let options: Options

    public init(model: MoETransformer, tokenizer: LoadedTokenizer?, options: Options) throws {
        guard options.maxNewTokens >= 1 else { throw ESFTError("--max-new-tokens must be ≥ 1") }
        guard options.batch >= 1 else { throw ESFTError("--batch must be ≥ 1") }
        if let tokenizer, tokenizer.vocabSize > model.config.vocabSize {
            throw ESFTError("the tokenizer has \(tokenizer.vocabSize) ids, more than the model's vocab_size \(model.config.vocabSize)")
        }
        self.model = model; self.tokenizer = tokenizer; self.options = options
    }

    /// Text prompts: BOS (unless `addBOS` is off) and the tokenizer's ids; stops at its EOS.
    public func complete(_ prompts: [String], progress: (Int) -> Void = { _ in }) throws -> [Completion] {
        guard let tokenizer else { throw ESFTError("text prompts need --tokenizer") }
        let encoded = prompts.map { (options.addBOS ? [tokenizer.bosId] : []) + tokenizer.tokenizer.encode($0) }
        return try complete(ids: encoded, stop: [tokenizer.eosId], progress: progress)
    }

    /// Prompts as ids, used as given; a stop token ends a sequence (and is not decoded into its text).
    public func complete(ids encoded: [[Int32]], stop: Set<Int32>, progress: (Int) -> Void = { _ in }) throws -> [Completion] {
        let limit = model.config.maxPositionEmbeddings
        if let i = encoded.firstIndex(where: { $0.count + options.maxNewTokens - 1 > limit }) {
            throw ESFTError("prompt \(i + 1): \(encoded[i].count) tokens + --max-new-tokens \(options.maxNewTokens) exceed the model's max_position_embeddings \(limit)")
        }
        var results: [Completion] = []
        let longest = encoded.map(\.count).max() ?? 1
        let decoder = try IncrementalDecoder(model: model, slots: min(options.batch, max(encoded.count, 1)),
                                             capacity: longest + options.maxNewTokens - 1)
        for start in stride(from: 0, to: encoded.count, by: options.batch) {
            let batch = Array(encoded[start..<min(encoded.count, start + options.batch)])
            let outs = try GreedyGeneration.run(decoder, prompts: batch, maxNewTokens: options.maxNewTokens, stop: stop)
            for (prompt, out) in zip(batch, outs) {
                let visible = out.stopped ? Array(out.tokens.dropLast()) : out.tokens
                results.append(Completion(promptTokens: prompt.count, tokens: out.tokens, text: text(of: visible), stopped: out.stopped))
            }
            progress(results.count)
        }
        return results
    }

    /// Decoded text with special tokens left out ("" without a tokenizer).
    func text(of ids: [Int32]) -> String {
        guard let tokenizer else { return "" }
        let special: Set<Int32> = [tokenizer.bosId, tokenizer.eosId, tokenizer.padId]
        if let hf = tokenizer.tokenizer as? HFTokenizer { return hf.decode(ids.filter { !special.contains($0) }, skipSpecialTokens: true) }
        return tokenizer.tokenizer.decode(ids.filter { !special.contains($0) })
    }
}

/// Results of a rank's share, brought to rank 0 in record order: each rank sends its lines with their
/// record indices; rank 0 puts them back in order.
public func gatherInRecordOrder(_ lines: [(index: Int, text: String)], comm: Communicator, tag: String) throws -> [String]? {
    var payload = Data()
    for (i, text) in lines {
        // Invariant: callers pass lines made by the one-line JSON writers (JSONText escapes newlines in strings).
        precondition(!text.contains("\n"), "result lines are one-line JSON")
        payload.append(Data("\(i)\t\(text)\n".utf8))
    }
    let parts = try comm.gather(payload, toRoot: 0, tag: tag)
    guard comm.rank == 0 else { return nil }
    var all: [(Int, String)] = []
    for part in parts {
        for line in String(decoding: part, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: true) {
            let tab = line.firstIndex(of: "\t")!
            all.append((Int(line[..<tab])!, String(line[line.index(after: tab)...])))
        }
    }
    return all.sorted { $0.0 < $1.0 }.map(\.1)
}

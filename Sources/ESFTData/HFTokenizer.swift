// A Hugging Face tokenizer.json of the byte-level BPE kind (GPT-2, DeepSeek-V2, Qwen, OLMoE),
// run in process. Encoding follows the Hugging Face pipeline step by step so the ids are
// identical: added tokens, normalizer, pre-tokenizer, BPE, post-processor.
import ESFTBase
import Foundation

/// Supported: normalizer null / NFC / NFD / NFKC / NFKD / Sequence; pre_tokenizer ByteLevel, or
/// a Sequence of Split (Regex or String pattern, every behavior, invert) and Digits ending in
/// ByteLevel (add_prefix_space, use_regex); model BPE (both merges forms, ignore_merges,
/// unk_token); added_tokens with single_word / lstrip / rstrip / normalized; post_processor
/// TemplateProcessing / ByteLevel / RobertaProcessing / BertProcessing / Sequence (the single-
/// sequence template only); decoder ByteLevel. Anything else, and truncation or padding, makes
/// loading throw `TokenizerError.unsupported` naming the feature and the file.
///
/// Safe to share between threads: the caches are locked.
public final class HFTokenizer: TextTokenizer, @unchecked Sendable {
    /// One more than the largest id of the vocab and the added tokens.
    public let vocabSize: Int
    /// Ids of the added tokens marked special (skipped by `decode(_:skipSpecialTokens: true)`).
    public let specialTokenIds: Set<Int32>
    /// Ids the post-processor puts before / after the text when `addSpecialTokens` is true
    /// (DeepSeek: `[bos]` / `[]`).
    public var prefixTokenIds: [Int32] { postProcessor.prefix }
    public var suffixTokenIds: [Int32] { postProcessor.suffix }

    private let normalizer: Normalizer
    private let pieces: PieceEncoder
    private let postProcessor: PostProcessor
    /// Added tokens matched in the raw text (normalized: false) and in the normalized text.
    private let rawMatcher: AddedTokenMatcher
    private let normalizedMatcher: AddedTokenMatcher
    private let tokenIds: [String: Int32]
    /// Text of each id as `decode` produces it; nil for ids nothing maps to.
    private let tokenStrings: [String?]
    private let tokenBytes: [[UInt8]?]

    /// Loads `tokenizer.json`, or the `tokenizer.json` inside `url` if it is a directory.
    public convenience init(contentsOf url: URL) throws {
        var file = url
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory), isDirectory.boolValue {
            file = url.appendingPathComponent("tokenizer.json")
        }
        let data: Data
        do {
            data = try Data(contentsOf: file)
        } catch {
            throw TokenizerError.unreadable(file: file.path, reason: ErrorText.reason(error))
        }
        try self.init(data: data, source: file.path)
    }

    /// Parses tokenizer.json bytes; `source` names the file in errors.
    public init(data: Data, source: String = "tokenizer.json") throws {
        let json = TokenizerJSON(file: source)
        let root = try json.parse(data)
        for key in ["truncation", "padding"] where json.optional(root, key) != nil {
            throw json.unsupported("\(key) (must be null; truncate or pad the ids yourself)")
        }
        let modelSection = try ModelSection(json: root["model"], json)
        normalizer = try Normalizer(json: root["normalizer"], json)
        let preTokenizer = try PreTokenizer(json: root["pre_tokenizer"], json)
        postProcessor = try PostProcessor(json: root["post_processor"], json)
        try Self.checkDecoder(root["decoder"], json)
        pieces = PieceEncoder(preTokenizer: preTokenizer, model: modelSection.model)

        let added = try json.array(json.optional(root, "added_tokens") ?? [Any](), "added_tokens")
            .enumerated().map { try AddedToken(json: $0.element, path: "added_tokens[\($0.offset)]", json) }
        let normalizer = self.normalizer
        rawMatcher = AddedTokenMatcher(added.filter { !$0.normalized }.map { ($0.content, $0) })
        normalizedMatcher = AddedTokenMatcher(added.filter(\.normalized).map { (normalizer.apply($0.content), $0) })
        specialTokenIds = Set(added.filter(\.special).map(\.id))

        var ids = modelSection.vocab
        for token in added { ids[token.content] = token.id }
        tokenIds = ids
        let maxId = max(modelSection.vocab.values.max() ?? -1, added.map(\.id).max() ?? -1)
        // Ids index the vocabulary: a table is sized by the largest. Real vocabularies leave at most a few gaps
        // (reserved ids); an id far beyond the tokens listed would size it by the file's word, not its content.
        let listed = modelSection.vocab.count + added.count, limit = 2 * listed + 65_536
        guard Int(maxId) < limit else {
            let owner = modelSection.vocab.first { $0.value == maxId }.map { "model.vocab[\"\($0.key)\"]" } ?? "added_tokens"
            throw json.malformed("\(owner): id \(maxId) is far beyond the \(listed) tokens listed (ids must stay below \(limit))")
        }
        vocabSize = Int(maxId) + 1
        var strings = [String?](repeating: nil, count: vocabSize)
        for (token, id) in modelSection.vocab { strings[Int(id)] = token }
        for token in added { strings[Int(token.id)] = token.content }  // added tokens win, as in HF
        tokenStrings = strings
        // The ByteLevel decoder: alphabet characters back to bytes; other tokens as their UTF-8.
        tokenBytes = strings.map { $0.map { ByteLevelAlphabet.bytes(ofToken: $0) ?? Array($0.utf8) } }
    }

    /// Only the ByteLevel decoder (alone or as the one step of a Sequence) makes sense here.
    private static func checkDecoder(_ value: Any?, _ json: TokenizerJSON) throws {
        guard let value, !(value is NSNull) else {
            throw json.unsupported("decoder null (a ByteLevel decoder is required)")
        }
        let object = try json.object(value, "decoder")
        let type = try json.type(object, "decoder")
        if type == "ByteLevel" { return }
        if type == "Sequence", let steps = object["decoders"] as? [Any], steps.count == 1 {
            return try checkDecoder(steps[0], json)
        }
        throw json.unsupported("decoder type \"\(type)\" (only ByteLevel is supported)")
    }

    /// Ids of `text` without special tokens: `encode(text, addSpecialTokens: false)`.
    public func encode(_ text: String) -> [Int32] {
        encode(text, addSpecialTokens: false)
    }

    /// Ids of `text`; with `addSpecialTokens` the post-processor's ids (DeepSeek: BOS) are added.
    public func encode(_ text: String, addSpecialTokens: Bool) -> [Int32] {
        var ids = [Int32]()
        ids.reserveCapacity(text.utf8.count / 2 + 4)
        if addSpecialTokens { ids += postProcessor.prefix }
        var raw = [InputSegment]()
        rawMatcher.split(text, into: &raw)
        var inner = [InputSegment]()
        for segment in raw {
            switch segment {
            case let .token(id): ids.append(id)
            case let .text(part):
                inner.removeAll(keepingCapacity: true)
                normalizedMatcher.split(normalizer.apply(part), into: &inner)
                for piece in inner {
                    switch piece {
                    case let .token(id): ids.append(id)
                    case let .text(normalized): pieces.encode(normalized, into: &ids)
                    }
                }
            }
        }
        if addSpecialTokens { ids += postProcessor.suffix }
        return ids
    }

    /// Text of `ids`, special tokens included. Unknown ids are skipped.
    public func decode(_ ids: [Int32]) -> String {
        decode(ids, skipSpecialTokens: false)
    }

    /// Text of `ids`; invalid UTF-8 (a token sequence cut inside a character) becomes U+FFFD.
    public func decode(_ ids: [Int32], skipSpecialTokens: Bool) -> String {
        var bytes = [UInt8]()
        bytes.reserveCapacity(ids.count * 4)
        for id in ids where id >= 0 && Int(id) < tokenBytes.count {
            if skipSpecialTokens && specialTokenIds.contains(id) { continue }
            if let tokenBytes = tokenBytes[Int(id)] { bytes += tokenBytes }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Id of a vocab entry or added token, by its tokenizer.json spelling (byte-level form for
    /// vocab entries: "Ġthe", not " the").
    public func tokenId(_ token: String) -> Int32? { tokenIds[token] }

    /// The tokenizer.json spelling of an id.
    public func token(_ id: Int32) -> String? {
        id >= 0 && Int(id) < tokenStrings.count ? tokenStrings[Int(id)] : nil
    }
}

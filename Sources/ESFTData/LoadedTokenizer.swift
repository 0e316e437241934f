// A tokenizer chosen on the command line ("bytes" or a tokenizer.json) with its special ids and
// the identity a token dataset records (kind and fingerprint).
import ESFTBase
import Foundation

public struct LoadedTokenizer: Sendable {
    public let tokenizer: any TextTokenizer
    /// "bytes" or "hf:<file name>".
    public let kind: String
    /// "bytes-v1", or FNV-1a 64 of the tokenizer.json bytes.
    public let fingerprint: String
    public let bosId: Int32, eosId: Int32, padId: Int32
    public var vocabSize: Int { tokenizer.vocabSize }

    /// Spellings tried in order when no override is given (DeepSeek, Llama/Mistral, GPT-2/Qwen, Gemma).
    static let bosNames = ["<｜begin▁of▁sentence｜>", "<s>", "<|begin_of_text|>", "<bos>", "<|endoftext|>"]
    static let eosNames = ["<｜end▁of▁sentence｜>", "</s>", "<|end_of_text|>", "<eos>", "<|endoftext|>"]
    static let padNames = ["<｜▁pad▁｜>", "<pad>", "<|pad|>", "<|finetune_right_pad_id|>"]

    /// The tokenizer alone, for commands that add no special tokens (esft tokenize): a tokenizer.json
    /// whose BOS/EOS have unknown names, or that has none, is fine here.
    public static func textTokenizer(_ spec: String) throws -> any TextTokenizer {
        spec == "bytes" ? ByteTokenizer() : try openHF(spec).tokenizer
    }

    private static func openHF(_ spec: String) throws -> (tokenizer: HFTokenizer, file: URL, data: Data) {
        var file = URL(fileURLWithPath: spec)
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: file.path, isDirectory: &isDirectory) else {
            throw ESFTError("\(spec): no such tokenizer (give 'bytes', a tokenizer.json, or a directory holding one)")
        }
        if isDirectory.boolValue { file = file.appendingPathComponent("tokenizer.json") }
        let data: Data
        do { data = try Data(contentsOf: file) } catch { throw ESFTError("\(file.path): cannot read tokenizer (\(ErrorText.reason(error)))") }
        do { return (try HFTokenizer(data: data, source: file.path), file, data) } catch let e as TokenizerError { throw ESFTError(e.description) }
    }

    /// `spec` is "bytes", a tokenizer.json, or a directory holding one. The overrides name a token
    /// (its tokenizer.json spelling) or give an id (a plain integer); PAD falls back to EOS (PAD positions are masked).
    public static func load(_ spec: String, bos: String? = nil, eos: String? = nil, pad: String? = nil) throws -> LoadedTokenizer {
        if spec == "bytes" {
            let t = ByteTokenizer()
            func id(_ s: String?, _ fallback: Int32) throws -> Int32 {
                guard let s else { return fallback }
                guard let v = Int32(s), v >= 0, v < 259 else { throw ESFTError("bytes tokenizer: special token '\(s)' must be an id in 0..<259") }
                return v
            }
            return LoadedTokenizer(tokenizer: t, kind: "bytes", fingerprint: "bytes-v1",
                                   bosId: try id(bos, ByteTokenizer.bos), eosId: try id(eos, ByteTokenizer.eos), padId: try id(pad, ByteTokenizer.pad))
        }
        let (t, file, data) = try openHF(spec)
        func resolve(_ override: String?, _ names: [String], _ what: String, flag: String) throws -> Int32? {
            if let override {
                // A plain integer is an id (a digit-only special token is not worth the ambiguity).
                if let id = Int32(override) {
                    guard id >= 0, Int(id) < t.vocabSize else { throw ESFTError("\(file.path): \(flag) id \(id) is not below the vocabulary size \(t.vocabSize)") }
                    return id
                }
                if let id = t.tokenId(override) { return id }
                throw ESFTError("\(file.path): \(flag) '\(override)' is neither a token of this tokenizer nor an id below \(t.vocabSize)")
            }
            return names.lazy.compactMap { t.tokenId($0) }.first
        }
        guard let bosId = try resolve(bos, bosNames, "BOS", flag: "--bos-token") ?? t.prefixTokenIds.first else {
            throw ESFTError("\(file.path): no BOS token found (tried \(bosNames.joined(separator: " "))); name one with --bos-token")
        }
        guard let eosId = try resolve(eos, eosNames, "EOS", flag: "--eos-token") ?? t.suffixTokenIds.last else {
            throw ESFTError("\(file.path): no EOS token found (tried \(eosNames.joined(separator: " "))); name one with --eos-token")
        }
        let padId = try resolve(pad, padNames, "PAD", flag: "--pad-token") ?? eosId
        return LoadedTokenizer(tokenizer: t, kind: "hf:\(file.lastPathComponent)", fingerprint: FNV1a64.digest([UInt8](data)),
                               bosId: bosId, eosId: eosId, padId: padId)
    }
}

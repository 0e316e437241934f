// The "model" section of tokenizer.json: only byte-level BPE is provided; every field that
// would change the result and is not implemented is refused by name.
import Foundation

struct ModelSection {
    let vocab: [String: Int32]
    let model: BPEModel

    init(json value: Any?, _ json: TokenizerJSON) throws {
        let object = try json.object(value, "model")
        let type = json.optional(object, "type") as? String ?? (object["merges"] != nil ? "BPE" : "unknown")
        guard type == "BPE" else {
            throw json.unsupported("model type \"\(type)\" (only BPE is supported)")
        }
        if let dropout = json.optional(object, "dropout") {
            guard let p = dropout as? NSNumber, p.doubleValue == 0 else {
                throw json.unsupported("BPE dropout \(dropout) (only null or 0)")
            }
        }
        if try json.bool(object, "byte_fallback", "model", fallback: false) {
            throw json.unsupported("BPE byte_fallback true (SentencePiece-style <0xNN> tokens)")
        }
        for key in ["continuing_subword_prefix", "end_of_word_suffix"] {
            if let affix = json.optional(object, key) as? String, !affix.isEmpty {
                throw json.unsupported("BPE \(key) \"\(affix)\"")
            }
        }
        let unkToken = json.optional(object, "unk_token").map { "\($0)" }
        let fuseUnk = try json.bool(object, "fuse_unk", "model", fallback: false)
        let ignoreMerges = try json.bool(object, "ignore_merges", "model", fallback: false)

        let vocabObject = try json.object(object["vocab"], "model.vocab")
        var vocab = [String: Int32](minimumCapacity: vocabObject.count)
        for (token, id) in vocabObject {
            let value = try json.int(id, "model.vocab[\"\(token)\"]")
            guard value >= 0, value <= Int(Int32.max) else { throw json.malformed("model.vocab id \(value) is out of range") }
            vocab[token] = Int32(value)
        }
        let mergeList = try json.array(object["merges"], "model.merges")
        var merges = [(String, String)]()
        merges.reserveCapacity(mergeList.count)
        for (i, item) in mergeList.enumerated() {
            if let line = item as? String {
                // Legacy form "left right"; byte-level tokens never contain a plain space.
                let parts = line.split(separator: " ", omittingEmptySubsequences: false)
                guard parts.count == 2 else { throw json.malformed("model.merges[\(i)] \"\(line)\" is not \"left right\"") }
                merges.append((String(parts[0]), String(parts[1])))
            } else if let pair = item as? [Any], pair.count == 2, let left = pair[0] as? String, let right = pair[1] as? String {
                merges.append((left, right))
            } else {
                throw json.malformed("model.merges[\(i)] must be \"left right\" or [left, right]")
            }
        }
        self.vocab = vocab
        model = try BPEModel(vocab: vocab, merges: merges, ignoreMerges: ignoreMerges,
                             unkToken: unkToken, fuseUnk: fuseUnk, json: json)
    }
}

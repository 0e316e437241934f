// The "post_processor" of tokenizer.json, reduced to what encoding one sequence with
// addSpecialTokens needs: ids to put before and after the text (e.g. DeepSeek's BOS).
import Foundation

struct PostProcessor {
    var prefix: [Int32] = []
    var suffix: [Int32] = []

    init() {}

    /// Parses null, ByteLevel (offsets only: no ids), TemplateProcessing (its "single"
    /// template), RobertaProcessing / BertProcessing (cls ... sep) and Sequence of those.
    init(json value: Any?, _ json: TokenizerJSON) throws {
        try add(value, path: "post_processor", json)
    }

    private mutating func add(_ value: Any?, path: String, _ json: TokenizerJSON) throws {
        guard let value, !(value is NSNull) else { return }
        let object = try json.object(value, path)
        let type = try json.type(object, path)
        switch type {
        case "ByteLevel":
            break
        case "Sequence":
            let items = try json.array(object["processors"], "\(path).processors")
            for (i, item) in items.enumerated() { try add(item, path: "\(path).processors[\(i)]", json) }
        case "TemplateProcessing":
            try addTemplate(object, path, json)
        case "RobertaProcessing", "BertProcessing":
            // "cls": ["<s>", 0], "sep": ["</s>", 2]
            let cls = try json.array(object["cls"], "\(path).cls")
            let sep = try json.array(object["sep"], "\(path).sep")
            guard cls.count == 2, sep.count == 2 else { throw json.malformed("\(path).cls/sep must be [token, id]") }
            prefix = [Int32(try json.int(cls[1], "\(path).cls[1]"))] + prefix
            suffix = suffix + [Int32(try json.int(sep[1], "\(path).sep[1]"))]
        default:
            throw json.unsupported("post_processor type \"\(type)\" at \(path) (supported: TemplateProcessing, ByteLevel, RobertaProcessing, BertProcessing, Sequence)")
        }
    }

    private mutating func addTemplate(_ object: [String: Any], _ path: String, _ json: TokenizerJSON) throws {
        guard let single = object["single"] as? [Any] else {
            throw json.malformed("\(path).single must be an array of template pieces")
        }
        let specials = try json.object(json.optional(object, "special_tokens") ?? [String: Any](), "\(path).special_tokens")
        var before = [Int32](), after = [Int32]()
        var seenSequence = false
        for (i, item) in single.enumerated() {
            let piece = try json.object(item, "\(path).single[\(i)]")
            if piece["Sequence"] != nil {
                guard !seenSequence else { throw json.unsupported("\(path).single with two sequences") }
                seenSequence = true
            } else if let special = piece["SpecialToken"] as? [String: Any] {
                let name = try json.string(special["id"], "\(path).single[\(i)].SpecialToken.id")
                guard let entry = specials[name] as? [String: Any] else {
                    throw json.malformed("\(path).single[\(i)] names \"\(name)\", which is not in special_tokens")
                }
                let ids = try json.array(entry["ids"], "\(path).special_tokens.\(name).ids")
                    .enumerated().map { Int32(try json.int($0.element, "\(path).special_tokens.\(name).ids[\($0.offset)]")) }
                if seenSequence { after += ids } else { before += ids }
            } else {
                throw json.malformed("\(path).single[\(i)] is neither a Sequence nor a SpecialToken")
            }
        }
        prefix = before + prefix
        suffix = suffix + after
    }
}

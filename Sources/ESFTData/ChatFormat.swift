import ESFTBase

// The ESFT reference's chat layout, as token-level parts with a trained/masked flag each. The
// parts are tokenized separately and concatenated, so the mask lines up with the ids exactly.
//
//   BOS                                  masked
//   [system]   "{s}\n\n"                 masked
//   user       "User: {q}\n\nAssistant:" masked
//   assistant  " {a}" EOS                trained
//   user       "User: {q}\n\nAssistant:" masked   (later turns: EOS already separates the turns,
//   assistant  " {a}" EOS                trained    as in DeepSeek-V2's chat template)
//
// A plain {"text": t} sample is BOS t EOS, every token trained. An assistant turn with "mask": 1 (the
// reference's field) is masked like a user turn. `ChatStyle.reference` adds the reference's two other
// choices: contents stripped of surrounding whitespace, and BOS trained (label = its id).

/// The choices on which esft's chat formatting and the ESFT reference's (`utils.py`) differ.
public struct ChatStyle: Equatable, Sendable {
    /// Strip whitespace around user and assistant contents, as Python's `str.strip()` does.
    public var strip = false
    /// BOS is a trained target (label = its id): it matters for a BOS that follows another sample in its
    /// row, which the model is then taught to predict after that sample's EOS.
    public var bosLabel = false
    public init(strip: Bool = false, bosLabel: Bool = false) { self.strip = strip; self.bosLabel = bosLabel }
    public static let esft = ChatStyle()
    public static let reference = ChatStyle(strip: true, bosLabel: true)
}

/// One piece of a formatted sample.
public struct SamplePart: Equatable, Sendable {
    public enum Kind: Equatable, Sendable { case bos, eos, text(String) }
    public let kind: Kind
    public let trained: Bool
    public init(_ kind: Kind, trained: Bool) { self.kind = kind; self.trained = trained }
}

public enum ChatFormat {
    /// The parts of one JSONL record; errors name the field at fault (the caller adds file:line).
    public static func parts(of json: Any, style: ChatStyle = .esft) throws -> [SamplePart] {
        guard let object = json as? [String: Any] else { throw FieldError("the line is not a JSON object") }
        if let messages = object["messages"] {
            guard let list = messages as? [Any] else { throw FieldError("\"messages\" is not a list") }
            return try chatParts(list, style: style)
        }
        if let text = object["text"] {
            guard let s = text as? String else { throw FieldError("\"text\" is not a string") }
            return [SamplePart(.bos, trained: true), SamplePart(.text(s), trained: true), SamplePart(.eos, trained: true)]
        }
        throw FieldError("neither \"messages\" nor \"text\" is present")
    }

    /// Turns must be: optional system turns, then user/assistant alternating, ending with the assistant.
    static func chatParts(_ list: [Any], style: ChatStyle) throws -> [SamplePart] {
        var parts = [SamplePart(.bos, trained: style.bosLabel)]
        var previous = "none"
        for (i, item) in list.enumerated() {
            guard let message = item as? [String: Any] else { throw FieldError("messages[\(i)] is not an object") }
            guard let roleValue = message["role"] else { throw FieldError("messages[\(i)].role is missing") }
            guard let role = roleValue as? String else { throw FieldError("messages[\(i)].role is not a string") }
            guard let contentValue = message["content"] else { throw FieldError("messages[\(i)].content is missing") }
            guard var content = contentValue as? String else { throw FieldError("messages[\(i)].content is not a string") }
            if style.strip && role != "system" { content = content.pythonStripped }
            switch role {
            case "system":
                guard previous == "none" || previous == "system" else { throw FieldError("messages[\(i)]: a system turn must come first") }
                parts.append(SamplePart(.text(content + "\n\n"), trained: false))
            case "user":
                guard previous != "user" else { throw FieldError("messages[\(i)]: two user turns in a row") }
                parts.append(SamplePart(.text("User: " + content + "\n\nAssistant:"), trained: false))
            case "assistant":
                guard previous == "user" else { throw FieldError("messages[\(i)]: an assistant turn must follow a user turn") }
                let trained = try !isMasked(message, index: i)
                parts.append(SamplePart(.text(" " + content), trained: trained))
                parts.append(SamplePart(.eos, trained: trained))
            default:
                throw FieldError("messages[\(i)].role \"\(role)\" is not user, assistant or system")
            }
            previous = role
        }
        guard list.contains(where: { ($0 as? [String: Any])?["role"] as? String == "assistant" }) else {
            throw FieldError("messages has no assistant turn (nothing to train on)")
        }
        guard previous == "assistant" else { throw FieldError("messages[\(list.count - 1)]: the last turn must be the assistant's") }
        return parts
    }

    /// The reference's `message.get('mask', 0) == 1`: 0/1 or false/true; anything else is an error here.
    static func isMasked(_ message: [String: Any], index i: Int) throws -> Bool {
        guard let value = message["mask"] else { return false }
        if let n = value as? Double, n == 0 || n == 1 { return n == 1 }
        if let b = value as? Bool { return b }  // Python: True == 1
        throw FieldError("messages[\(i)].mask is \(value), expected 0 or 1")
    }

    /// The text of the parts, special tokens left out (what `esft tokenize` encodes for a JSONL line).
    public static func text(of parts: [SamplePart]) -> String {
        parts.map { if case let .text(s) = $0.kind { return s } else { return "" } }.joined()
    }

    /// Ids and HF labels (label = id where trained, -100 where masked), each text part encoded on its own.
    public static func tokenize(_ parts: [SamplePart], with tokenizer: LoadedTokenizer) -> (ids: [Int32], labels: [Int32]) {
        var ids = [Int32](), labels = [Int32]()
        for part in parts {
            let piece: [Int32]
            switch part.kind {
            case .bos: piece = [tokenizer.bosId]
            case .eos: piece = [tokenizer.eosId]
            case let .text(s): piece = tokenizer.tokenizer.encode(s)
            }
            ids += piece
            labels += part.trained ? piece : [Int32](repeating: -100, count: piece.count)
        }
        return (ids, labels)
    }
}

/// A wrong or missing field in one record.
public struct FieldError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

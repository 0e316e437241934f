// The tokenizer interface the trainer uses, and the one error type of this module.

/// Text to token ids and back. Ids are `Int32` because that is what the model's embedding
/// lookup and the data files use.
public protocol TextTokenizer: Sendable {
    /// One more than the largest id `encode` or the special-token ids can produce.
    var vocabSize: Int { get }
    /// Ids of `text`, without any special tokens added.
    func encode(_ text: String) -> [Int32]
    /// Text of `ids`. Unknown ids are skipped.
    func decode(_ ids: [Int32]) -> String
}

/// Why a tokenizer could not be loaded.
public enum TokenizerError: Error, Equatable, CustomStringConvertible {
    /// The file could not be read at all.
    case unreadable(file: String, reason: String)
    /// The file is not valid JSON, or a required field is missing or has the wrong type.
    case malformed(file: String, reason: String)
    /// The file is valid but uses a feature this implementation does not provide.
    case unsupported(file: String, feature: String)

    public var description: String {
        switch self {
        case let .unreadable(file, reason): return "cannot read tokenizer file \(file): \(reason)"
        case let .malformed(file, reason): return "malformed tokenizer file \(file): \(reason)"
        case let .unsupported(file, feature): return "unsupported feature in tokenizer file \(file): \(feature)"
        }
    }
}

// Added tokens ("added_tokens" in tokenizer.json): strings cut out of the input before
// normalization and pre-tokenization, each mapping straight to its id. Matching follows the
// Hugging Face AddedVocabulary: leftmost-longest over UTF-8 bytes, then the single_word, lstrip
// and rstrip rules; tokens with normalized=false match the raw text, the others the normalized
// text.
import Foundation

struct AddedToken {
    let id: Int32
    let content: String
    let singleWord: Bool
    let lstrip: Bool
    let rstrip: Bool
    let normalized: Bool
    let special: Bool

    init(json value: Any, path: String, _ json: TokenizerJSON) throws {
        let object = try json.object(value, path)
        let id = try json.int(object["id"], "\(path).id")
        guard id >= 0, id <= Int(Int32.max) else { throw json.malformed("\(path).id \(id) is out of range") }
        self.id = Int32(id)
        content = try json.string(object["content"], "\(path).content")
        singleWord = try json.bool(object, "single_word", path, fallback: false)
        lstrip = try json.bool(object, "lstrip", path, fallback: false)
        rstrip = try json.bool(object, "rstrip", path, fallback: false)
        special = try json.bool(object, "special", path, fallback: false)
        normalized = try json.bool(object, "normalized", path, fallback: !special)
    }
}

/// A part of the input: text still to tokenize, or an added token's id.
enum InputSegment {
    case text(String)
    case token(Int32)
}

/// Finds one group of added tokens (the raw-text group or the normalized-text group).
struct AddedTokenMatcher {
    private struct Pattern {
        let bytes: [UInt8]
        let token: AddedToken
    }
    /// Patterns by first byte, longest first (ties: first in the file).
    private let byFirstByte: [[Pattern]]
    let isEmpty: Bool

    /// `contents` are what to look for: the token content, or its normalized form.
    init(_ tokens: [(content: String, token: AddedToken)]) {
        var table = [[Pattern]](repeating: [], count: 256)
        for (content, token) in tokens where !content.isEmpty {
            let bytes = Array(content.utf8)
            table[Int(bytes[0])].append(Pattern(bytes: bytes, token: token))
        }
        byFirstByte = table.map { list in
            list.enumerated().sorted { a, b in
                a.element.bytes.count != b.element.bytes.count ? a.element.bytes.count > b.element.bytes.count : a.offset < b.offset
            }.map(\.element)
        }
        isEmpty = tokens.allSatisfy { $0.content.isEmpty }
    }

    /// Cuts `text` into text and token segments.
    func split(_ text: String, into out: inout [InputSegment]) {
        if isEmpty { out.append(.text(text)); return }
        let bytes = Array(text.utf8)
        var startOffset = 0  // end of the last accepted token
        var position = 0
        while let (start, pattern) = nextMatch(bytes, from: position) {
            var begin = start
            var stop = start + pattern.bytes.count
            position = stop
            let token = pattern.token
            if token.singleWord {
                let startsWord = start > 0 && Self.isWordScalar(Self.scalar(before: start, in: bytes))
                let endsWord = stop < bytes.count && Self.isWordScalar(Self.scalar(at: stop, in: bytes))
                if startsWord || endsWord { continue }
            }
            if token.lstrip {
                var s = begin
                while s > 0, let scalar = Self.scalar(before: s, in: bytes), scalar.properties.isWhitespace {
                    s -= UTF8.width(scalar)
                }
                begin = max(s, startOffset)
            }
            if token.rstrip {
                while stop < bytes.count, let scalar = Self.scalar(at: stop, in: bytes), scalar.properties.isWhitespace {
                    stop += UTF8.width(scalar)
                }
            }
            if startOffset < begin { out.append(.text(String(decoding: bytes[startOffset..<begin], as: UTF8.self))) }
            out.append(.token(token.id))
            startOffset = stop
        }
        if startOffset < bytes.count { out.append(.text(String(decoding: bytes[startOffset...], as: UTF8.self))) }
    }

    /// Leftmost match at or after `from`, the longest one there.
    private func nextMatch(_ bytes: [UInt8], from: Int) -> (Int, Pattern)? {
        var i = from
        while i < bytes.count {
            for pattern in byFirstByte[Int(bytes[i])] where i + pattern.bytes.count <= bytes.count {
                var equal = true
                for k in 1..<pattern.bytes.count where bytes[i + k] != pattern.bytes[k] {
                    equal = false
                    break
                }
                if equal { return (i, pattern) }
            }
            i += 1
        }
        return nil
    }

    /// Rust regex `\w`: Alphabetic, marks, decimal digits, connector punctuation, joiners.
    static func isWordScalar(_ scalar: Unicode.Scalar?) -> Bool {
        guard let scalar else { return false }
        let properties = scalar.properties
        if properties.isAlphabetic || properties.isJoinControl { return true }
        switch properties.generalCategory {
        case .nonspacingMark, .spacingMark, .enclosingMark, .decimalNumber, .connectorPunctuation: return true
        default: return false
        }
    }

    static func scalar(at offset: Int, in bytes: [UInt8]) -> Unicode.Scalar? {
        var iterator = bytes[offset...].makeIterator()
        var decoder = UTF8()
        if case let .scalarValue(scalar) = decoder.decode(&iterator) { return scalar }
        return nil
    }

    static func scalar(before offset: Int, in bytes: [UInt8]) -> Unicode.Scalar? {
        var start = offset - 1
        while start > 0, bytes[start] & 0xC0 == 0x80 { start -= 1 }
        return scalar(at: start, in: bytes)
    }
}

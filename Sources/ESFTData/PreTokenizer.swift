// Pre-tokenization: cuts normalized text into the pieces BPE runs on, as tokenizer.json's
// "pre_tokenizer" says. Pieces are UTF-16 ranges of one segment while regexes run (ICU works in
// UTF-16), and UTF-8 byte ranges at the end (BPE works on bytes).
import Foundation

/// What happens to the matches of a Split pattern (the Hugging Face SplitDelimiterBehavior).
enum SplitBehavior: String {
    case removed = "Removed", isolated = "Isolated", mergedWithPrevious = "MergedWithPrevious"
    case mergedWithNext = "MergedWithNext", contiguous = "Contiguous"
}

enum PreTokenizerStep {
    case split(NSRegularExpression, SplitBehavior, invert: Bool)
    /// Digits: numeric characters isolated one by one, or kept in runs.
    case digits(individual: Bool)
}

/// One normalized segment of input, with the views the pipeline needs.
struct SegmentText {
    let string: String
    let units: [UInt16]
    let utf8: [UInt8]
    /// UTF-8 offset of each UTF-16 offset (count + 1 entries).
    let utf8Offset: [Int32]

    init(_ string: String) {
        self.string = string
        units = Array(string.utf16)
        utf8 = Array(string.utf8)
        var offsets = [Int32](repeating: 0, count: units.count + 1)
        var u16 = 0, u8: Int32 = 0
        for scalar in string.unicodeScalars {
            offsets[u16] = u8
            if scalar.value > 0xFFFF { offsets[u16 + 1] = u8; u16 += 2 } else { u16 += 1 }
            u8 += Int32(UTF8.width(scalar))
        }
        offsets[u16] = u8
        utf8Offset = offsets
    }
}

/// A piece for BPE: bytes `start..<end` of the segment's UTF-8, after a space if `prefixSpace`.
struct BytePiece {
    var start: Int
    var end: Int
    var prefixSpace: Bool
}

struct PreTokenizer {
    let steps: [PreTokenizerStep]
    /// The final ByteLevel step.
    let addPrefixSpace: Bool
    let useRegex: Bool

    /// GPT-2's split, which ByteLevel applies when use_regex is true.
    // Cannot throw: a constant pattern, compiled by every test that tokenizes.
    static let gpt2Regex = try! NSRegularExpression(
        pattern: "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+")

    /// Parses "pre_tokenizer": ByteLevel alone, or a Sequence of Split / Digits steps ending in
    /// ByteLevel. Anything else is refused, since only byte-level BPE is supported.
    init(json value: Any?, _ json: TokenizerJSON) throws {
        guard let value, !(value is NSNull) else {
            throw json.unsupported("pre_tokenizer is null (only byte-level BPE with a ByteLevel pre-tokenizer is supported)")
        }
        var flat = [(Any, String)]()
        try Self.flatten(value, path: "pre_tokenizer", into: &flat, json)
        var steps = [PreTokenizerStep]()
        var byteLevel: (prefix: Bool, regex: Bool)?
        for (item, path) in flat {
            let object = try json.object(item, path)
            let type = try json.type(object, path)
            if byteLevel != nil {
                throw json.unsupported("pre-tokenizer \(type) at \(path) after ByteLevel (ByteLevel must be the last step)")
            }
            switch type {
            case "ByteLevel":
                byteLevel = (try json.bool(object, "add_prefix_space", path, fallback: true),
                             try json.bool(object, "use_regex", path, fallback: true))
            case "Digits":
                steps.append(.digits(individual: try json.bool(object, "individual_digits", path, fallback: false)))
            case "Split":
                steps.append(try Self.split(object, path, json))
            default:
                throw json.unsupported("pre-tokenizer type \"\(type)\" at \(path) (supported: ByteLevel, Split, Digits, Sequence)")
            }
        }
        guard let byteLevel else {
            throw json.unsupported("pre_tokenizer without a ByteLevel step (only byte-level BPE is supported)")
        }
        self.steps = steps
        addPrefixSpace = byteLevel.prefix
        useRegex = byteLevel.regex
    }

    private static func flatten(_ value: Any, path: String, into flat: inout [(Any, String)],
                                _ json: TokenizerJSON) throws {
        let object = try json.object(value, path)
        guard try json.type(object, path) == "Sequence" else { flat.append((value, path)); return }
        let items = try json.array(object["pretokenizers"], "\(path).pretokenizers")
        for (i, item) in items.enumerated() {
            try flatten(item, path: "\(path).pretokenizers[\(i)]", into: &flat, json)
        }
    }

    private static func split(_ object: [String: Any], _ path: String, _ json: TokenizerJSON) throws -> PreTokenizerStep {
        let pattern = try json.object(object["pattern"], "\(path).pattern")
        let regex: NSRegularExpression
        if let source = pattern["Regex"] as? String {
            regex = try OnigurumaRegex.compile(source, json: json)
        } else if let literal = pattern["String"] as? String {
            regex = try OnigurumaRegex.compile(NSRegularExpression.escapedPattern(for: literal), json: json)
        } else {
            throw json.malformed("\(path).pattern must be {\"Regex\": ...} or {\"String\": ...}")
        }
        let name = try json.string(object["behavior"], "\(path).behavior")
        guard let behavior = SplitBehavior(rawValue: name) else {
            throw json.unsupported("split behavior \"\(name)\" at \(path)")
        }
        return .split(regex, behavior, invert: try json.bool(object, "invert", path, fallback: false))
    }

    /// Appends the pieces step `index` of `steps` cuts `units[start..<end]` of `text` into.
    func split(step index: Int, _ text: SegmentText, _ start: Int, _ end: Int, into out: inout [(Int, Int)]) {
        var parts = [(Int, Int, Bool)]()
        switch steps[index] {
        case let .split(regex, behavior, invert):
            // Unless matches are removed, a piece of one character always stays whole.
            let oneScalar = end - start == 1 || (end - start == 2 && UTF16.isLeadSurrogate(text.units[start]))
            if oneScalar && behavior != .removed {
                out.append((start, end))
                return
            }
            var matches = [(Int, Int)]()
            OnigurumaRegex.matches(regex, in: text.string, start: start, end: end, into: &matches)
            Self.segments(matches, start, end, invert: invert, into: &parts)
            Self.apply(behavior, parts, into: &out)
        case let .digits(individual):
            Self.numericSegments(text.units, start, end, into: &parts)
            Self.apply(individual ? .isolated : .contiguous, parts, into: &out)
        }
    }

    /// The ByteLevel step: optional prefix space, optional GPT-2 split, then UTF-8 ranges.
    func byteLevel(_ text: SegmentText, _ start: Int, _ end: Int, into out: inout [BytePiece]) {
        let prefix = addPrefixSpace && text.units[start] != 0x20
        let u8 = text.utf8Offset
        guard useRegex else {
            out.append(BytePiece(start: Int(u8[start]), end: Int(u8[end]), prefixSpace: prefix))
            return
        }
        var matches = [(Int, Int)]()
        var scratch = [(Int, Int, Bool)]()
        var isolated = [(Int, Int)]()
        if !prefix {
            OnigurumaRegex.matches(Self.gpt2Regex, in: text.string, start: start, end: end, into: &matches)
            Self.segments(matches, start, end, invert: false, into: &scratch)
            Self.apply(.isolated, scratch, into: &isolated)
            for (s, e) in isolated { out.append(BytePiece(start: Int(u8[s]), end: Int(u8[e]), prefixSpace: false)) }
            return
        }
        // The regex must see the added space: run it on " " + piece, offset 0 being the space.
        let spaced = " " + String(decoding: text.units[start..<end], as: UTF16.self)
        let count = end - start + 1
        OnigurumaRegex.matches(Self.gpt2Regex, in: spaced, start: 0, end: count, into: &matches)
        Self.segments(matches, 0, count, invert: false, into: &scratch)
        Self.apply(.isolated, scratch, into: &isolated)
        for (s, e) in isolated {
            let from = s == 0 ? start : start + s - 1
            out.append(BytePiece(start: Int(u8[from]), end: Int(u8[start + e - 1]), prefixSpace: s == 0))
        }
    }

    /// Hugging Face's find_matches: the range cut into (start, end, isMatch) parts covering it.
    static func segments(_ matches: [(Int, Int)], _ start: Int, _ end: Int, invert: Bool,
                         into out: inout [(Int, Int, Bool)]) {
        var previous = start
        for (s, e) in matches {
            if previous != s { out.append((previous, s, invert)) }
            out.append((s, e, !invert))
            previous = e
        }
        if previous != end { out.append((previous, end, invert)) }
    }

    /// Each numeric character (general category Nd, Nl, No, like Rust's char::is_numeric) as
    /// its own match.
    static func numericSegments(_ units: [UInt16], _ start: Int, _ end: Int, into out: inout [(Int, Int, Bool)]) {
        var previous = start
        var i = start
        while i < end {
            var value = UInt32(units[i])
            var width = 1
            if UTF16.isLeadSurrogate(units[i]), i + 1 < end, UTF16.isTrailSurrogate(units[i + 1]) {
                value = 0x10000 + ((value - 0xD800) << 10) + (UInt32(units[i + 1]) - 0xDC00)
                width = 2
            }
            if let scalar = Unicode.Scalar(value), isNumeric(scalar) {
                if previous < i { out.append((previous, i, false)) }
                out.append((i, i + width, true))
                previous = i + width
            }
            i += width
        }
        if previous < end { out.append((previous, end, false)) }
    }

    static func isNumeric(_ scalar: Unicode.Scalar) -> Bool {
        if scalar.isASCII { return scalar.value >= 0x30 && scalar.value <= 0x39 }
        switch scalar.properties.generalCategory {
        case .decimalNumber, .letterNumber, .otherNumber: return true
        default: return false
        }
    }

    /// Hugging Face's NormalizedString::split: applies the behavior to the parts and keeps the
    /// non-empty pieces.
    static func apply(_ behavior: SplitBehavior, _ parts: [(Int, Int, Bool)], into out: inout [(Int, Int)]) {
        var result = [(Int, Int)]()
        result.reserveCapacity(parts.count)
        var previousMatch = false
        switch behavior {
        case .isolated:
            for (s, e, _) in parts { result.append((s, e)) }
        case .removed:
            for (s, e, isMatch) in parts where !isMatch { result.append((s, e)) }
        case .contiguous:
            for (s, e, isMatch) in parts {
                if isMatch == previousMatch, !result.isEmpty { result[result.count - 1].1 = e } else { result.append((s, e)) }
                previousMatch = isMatch
            }
        case .mergedWithPrevious:
            for (s, e, isMatch) in parts {
                if isMatch && !previousMatch, !result.isEmpty { result[result.count - 1].1 = e } else { result.append((s, e)) }
                previousMatch = isMatch
            }
        case .mergedWithNext:
            for (s, e, isMatch) in parts.reversed() {
                if isMatch && !previousMatch, !result.isEmpty { result[result.count - 1].0 = s } else { result.append((s, e)) }
                previousMatch = isMatch
            }
            result.reverse()
        }
        for piece in result where piece.0 < piece.1 { out.append(piece) }
    }
}

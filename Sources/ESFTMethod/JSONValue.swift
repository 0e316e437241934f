import ESFTKernels
import Foundation

/// A parsed JSON value. Numbers keep their literal text: Foundation's JSONSerialization on Linux
/// rounds some 17-digit doubles to a neighbouring value, and a scores file must read back bit for bit.
/// Double(String) is correctly rounded.
enum JSONValue {
    case null
    case bool(Bool)
    case number(String)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    /// Parses a whole document; errors give line and column.
    static func parse(_ data: Data, source: String) throws -> JSONValue {
        try data.withUnsafeBytes { bytes in
            var p = JSONParser(bytes: bytes, source: source)
            p.skipWhitespace()
            let v = try p.value(depth: 0)
            p.skipWhitespace()
            guard p.pos == bytes.count else { throw p.fail("unexpected text after the JSON value") }
            return v
        }
    }
}

private struct JSONParser {
    let bytes: UnsafeRawBufferPointer
    let source: String
    var pos = 0

    init(bytes: UnsafeRawBufferPointer, source: String) { self.bytes = bytes; self.source = source }

    func fail(_ what: String) -> ESFTError {
        var line = 1, column = 1
        for i in 0..<min(pos, bytes.count) {
            if bytes[i] == UInt8(ascii: "\n") { line += 1; column = 1 } else { column += 1 }
        }
        return ESFTError("\(source): not valid JSON at line \(line), column \(column): \(what)")
    }

    var current: UInt8? { pos < bytes.count ? bytes[pos] : nil }

    mutating func skipWhitespace() {
        while let c = current, c == 0x20 || c == 0x09 || c == 0x0A || c == 0x0D { pos += 1 }
    }

    mutating func expect(_ word: String) throws {
        for c in word.utf8 {
            guard current == c else { throw fail("expected '\(word)'") }
            pos += 1
        }
    }

    mutating func value(depth: Int) throws -> JSONValue {
        guard depth < 64 else { throw fail("nested too deeply") }
        guard let c = current else { throw fail("unexpected end of file") }
        switch c {
        case UInt8(ascii: "{"): return try object(depth: depth)
        case UInt8(ascii: "["): return try array(depth: depth)
        case UInt8(ascii: "\""): return .string(try string())
        case UInt8(ascii: "t"): try expect("true"); return .bool(true)
        case UInt8(ascii: "f"): try expect("false"); return .bool(false)
        case UInt8(ascii: "n"): try expect("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return .number(try number())
        default: throw fail("unexpected character '\(Character(Unicode.Scalar(c)))'")
        }
    }

    mutating func object(depth: Int) throws -> JSONValue {
        pos += 1
        var members: [String: JSONValue] = [:]
        skipWhitespace()
        if current == UInt8(ascii: "}") { pos += 1; return .object(members) }
        while true {
            skipWhitespace()
            guard current == UInt8(ascii: "\"") else { throw fail("expected a quoted key") }
            let key = try string()
            guard members[key] == nil else { throw fail("key \"\(key)\" appears twice") }
            skipWhitespace()
            try expect(":")
            skipWhitespace()
            members[key] = try value(depth: depth + 1)
            skipWhitespace()
            if current == UInt8(ascii: ",") { pos += 1; continue }
            try expect("}")
            return .object(members)
        }
    }

    mutating func array(depth: Int) throws -> JSONValue {
        pos += 1
        var items: [JSONValue] = []
        skipWhitespace()
        if current == UInt8(ascii: "]") { pos += 1; return .array(items) }
        while true {
            skipWhitespace()
            items.append(try value(depth: depth + 1))
            skipWhitespace()
            if current == UInt8(ascii: ",") { pos += 1; continue }
            try expect("]")
            return .array(items)
        }
    }

    mutating func number() throws -> String {
        let start = pos
        func digits() -> Int {
            let s = pos
            while let c = current, c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9") { pos += 1 }
            return pos - s
        }
        if current == UInt8(ascii: "-") { pos += 1 }
        guard digits() > 0 else { throw fail("expected digits in a number") }
        if current == UInt8(ascii: ".") {
            pos += 1
            guard digits() > 0 else { throw fail("expected digits after the decimal point") }
        }
        if current == UInt8(ascii: "e") || current == UInt8(ascii: "E") {
            pos += 1
            if current == UInt8(ascii: "+") || current == UInt8(ascii: "-") { pos += 1 }
            guard digits() > 0 else { throw fail("expected digits in the exponent") }
        }
        return String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<pos]), as: UTF8.self)
    }

    mutating func string() throws -> String {
        pos += 1
        var out = [UInt8]()
        while true {
            guard let c = current else { throw fail("unterminated string") }
            pos += 1
            switch c {
            case UInt8(ascii: "\""):
                return String(decoding: out, as: UTF8.self)
            case UInt8(ascii: "\\"):
                guard let e = current else { throw fail("unterminated string") }
                pos += 1
                switch e {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(e)
                case UInt8(ascii: "b"): out.append(0x08)
                case UInt8(ascii: "f"): out.append(0x0C)
                case UInt8(ascii: "n"): out.append(0x0A)
                case UInt8(ascii: "r"): out.append(0x0D)
                case UInt8(ascii: "t"): out.append(0x09)
                case UInt8(ascii: "u"): out += Array(String(try unicodeEscape()).utf8)
                default: throw fail("unknown escape '\\\(Character(Unicode.Scalar(e)))'")
                }
            case 0..<0x20:
                throw fail("control character in a string")
            default:
                out.append(c)
            }
        }
    }

    /// \uXXXX, with a following \uXXXX low surrogate when the first is a high surrogate.
    mutating func unicodeEscape() throws -> Character {
        let high = try hex4()
        if (0xD800..<0xDC00).contains(high) {
            try expect("\\u")
            let low = try hex4()
            guard (0xDC00..<0xE000).contains(low) else { throw fail("invalid surrogate pair") }
            return Character(Unicode.Scalar(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00))!)
        }
        guard let scalar = Unicode.Scalar(high) else { throw fail("invalid \\u escape") }
        return Character(scalar)
    }

    mutating func hex4() throws -> UInt32 {
        var v: UInt32 = 0
        for _ in 0..<4 {
            guard let c = current, let d = Character(Unicode.Scalar(c)).hexDigitValue else { throw fail("expected 4 hex digits after \\u") }
            v = v * 16 + UInt32(d); pos += 1
        }
        return v
    }
}

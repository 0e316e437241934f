import Foundation

/// Hand-written JSON output: layer and expert keys in numeric order (JSONSerialization would sort
/// "10" before "2") and one layer per line, so files diff and read well.
public enum JSONText {
    public static func string(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where u.value < 0x20: out += String(format: "\\u%04x", u.value)
            default: out.unicodeScalars.append(u)
            }
        }
        return out + "\""
    }

    /// Shortest spelling that reads back to the same Double; `null` for NaN and ±infinity, which JSON cannot
    /// hold (an eval loss on a model with non-finite weights, say: reported, not a crash).
    public static func number(_ x: Double) -> String {
        x.isFinite ? "\(x)" : "null"
    }

    public static func optionalString(_ s: String?) -> String { s.map(string) ?? "null" }
    public static func optionalInt(_ i: Int?) -> String { i.map { "\($0)" } ?? "null" }
    public static func intList(_ xs: [Int]) -> String { "[" + xs.map(String.init).joined(separator: ", ") + "]" }

    /// {"0": v0, "1": v1, ...}: a per-expert map on one line.
    public static func expertMap(_ values: [Double]) -> String {
        "{" + values.enumerated().map { "\"\($0.offset)\": \(number($0.element))" }.joined(separator: ", ") + "}"
    }

    /// A valid JSON object's text with one top-level member removed and every other byte kept (numbers keep
    /// their spelling, 1.0 stays 1.0, which Python readers type-check). Unchanged if the key is absent.
    public static func removingMember(_ key: String, from data: Data) -> Data {
        let b = [UInt8](data), quote = UInt8(ascii: "\""), target = Array(string(key).utf8)
        var i = 0, depth = 0
        // The end of the string starting at `at` (one past its closing quote).
        func stringEnd(_ at: Int) -> Int {
            var j = at + 1
            while j < b.count && b[j] != quote { j += b[j] == UInt8(ascii: "\\") ? 2 : 1 }
            return j + 1
        }
        func skipSpace(_ j: Int) -> Int { var j = j; while j < b.count && [9, 10, 13, 32].contains(b[j]) { j += 1 }; return j }
        while i < b.count {
            let c = b[i]
            if c == quote {
                let end = stringEnd(i)
                let colon = skipSpace(end)
                if depth == 1, colon < b.count, b[colon] == UInt8(ascii: ":"), Array(b[i..<end]) == target {
                    // The value: up to the ',' or '}' that closes it at this depth.
                    var j = skipSpace(colon + 1), level = 0
                    while j < b.count {
                        if b[j] == quote { j = stringEnd(j); continue }
                        if b[j] == UInt8(ascii: "{") || b[j] == UInt8(ascii: "[") { level += 1 }
                        if b[j] == UInt8(ascii: "}") || b[j] == UInt8(ascii: "]") { if level == 0 { break }; level -= 1 }
                        if b[j] == UInt8(ascii: ","), level == 0 { break }
                        j += 1
                    }
                    var from = i, to = j
                    if to < b.count && b[to] == UInt8(ascii: ",") {
                        to = skipSpace(to + 1)                       // drop the following comma and the space after it
                    } else {                                         // last member: drop the comma before it
                        while to > from && [9, 10, 13, 32].contains(b[to - 1]) { to -= 1 }  // keep the space before '}'
                        var k = from - 1
                        while k > 0 && [9, 10, 13, 32].contains(b[k]) { k -= 1 }
                        if b[k] == UInt8(ascii: ",") { from = k }
                    }
                    return Data(b[0..<from] + b[to...])
                }
                i = end
                continue
            }
            if c == UInt8(ascii: "{") || c == UInt8(ascii: "[") { depth += 1 }
            if c == UInt8(ascii: "}") || c == UInt8(ascii: "]") { depth -= 1 }
            i += 1
        }
        return data
    }

    /// An object whose members are already rendered, one per line at the given indent.
    public static func object(_ members: [(String, String)], indent: String = "") -> String {
        if members.isEmpty { return "{}" }
        let inner = indent + "  "
        return "{\n" + members.map { inner + string($0.0) + ": " + $0.1 }.joined(separator: ",\n") + "\n" + indent + "}"
    }
}

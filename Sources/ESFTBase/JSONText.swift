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

    /// An object whose members are already rendered, one per line at the given indent.
    public static func object(_ members: [(String, String)], indent: String = "") -> String {
        if members.isEmpty { return "{}" }
        let inner = indent + "  "
        return "{\n" + members.map { inner + string($0.0) + ": " + $0.1 }.joined(separator: ",\n") + "\n" + indent + "}"
    }
}

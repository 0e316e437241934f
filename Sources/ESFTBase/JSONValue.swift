import Foundation

/// A parsed JSON value for files whose fields we check one by one (scores, expert configs, config.json,
/// training configs).
/// Parsing goes through Foundation's JSONDecoder, which reads doubles exactly (JSONSerialization on
/// Linux rounds about a third of 17-digit doubles to a neighbour, and a scores file must read back bit
/// for bit). Numbers keep a text form that Double(String) and Int(String) read back exactly.
public enum JSONValue: Decodable, Equatable, Sendable {
    case null
    case bool(Bool)
    case number(String)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null }
        else if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let i = try? c.decode(Int64.self) { self = .number(String(i)) }
        else if let d = try? c.decode(Double.self) { self = .number("\(d)") }
        else if let s = try? c.decode(String.self) { self = .string(s) }
        else if let a = try? c.decode([JSONValue].self) { self = .array(a) }
        else { self = .object(try c.decode([String: JSONValue].self)) }
    }

    /// Parses a whole document; syntax errors name the file and say where.
    public static func parse(_ data: Data, source: String) throws -> JSONValue {
        do {
            return try JSONDecoder().decode(JSONValue.self, from: data)
        } catch {
            throw ESFTError("\(source): not valid JSON\(syntaxErrorLocation(data))")
        }
    }

    /// JSONDecoder on Linux does not say where a syntax error is; JSONSerialization does ("around
    /// character N"), so ask it, and turn the offset into a line and column.
    private static func syntaxErrorLocation(_ data: Data) -> String {
        do { _ = try JSONSerialization.jsonObject(with: data) } catch let error as NSError {
            let detail = error.userInfo[NSDebugDescriptionErrorKey] as? String ?? error.localizedDescription
            guard let r = detail.range(of: #"character (\d+)"#, options: .regularExpression),
                  let offset = Int(detail[r].dropFirst("character ".count)) else { return ": \(detail)" }
            var line = 1, column = 1
            for byte in data.prefix(offset) {
                if byte == UInt8(ascii: "\n") { line += 1; column = 1 } else { column += 1 }
            }
            let what = detail.replacingOccurrences(of: #" around character \d+\.?"#, with: "", options: .regularExpression)
            return " at line \(line), column \(column): \(what)"
        }
        return ""
    }
}

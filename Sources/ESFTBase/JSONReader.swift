import Foundation

/// Typed reads from a parsed JSON document; every error names the file and the field path.
public struct JSONReader {
    public let value: JSONValue
    /// The file (or flag) the value came from, named in every error.
    public let source: String
    /// Where in the document: "" for the top level, else "a.b[2].c".
    public let path: String

    public init(value: JSONValue, source: String, path: String = "") {
        self.value = value; self.source = source; self.path = path
    }

    /// Parses a whole file; `what` says what the file should be ("scores file").
    public static func load(_ url: URL, what: String) throws -> JSONReader {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw ESFTError("\(url.path): cannot read \(what) (\(ErrorText.reason(error)))")
        }
        return try parse(data, source: url.path, what: what)
    }

    public static func parse(_ data: Data, source: String, what: String) throws -> JSONReader {
        let v = try JSONValue.parse(data, source: source)
        guard case .object = v else { throw ESFTError("\(source): expected a JSON object at the top level (a \(what))") }
        return JSONReader(value: v, source: source)
    }

    public func fail(_ what: String) -> ESFTError {
        ESFTError(path.isEmpty ? "\(source): \(what)" : "\(source): field '\(path)' \(what)")
    }

    private func child(_ v: JSONValue, _ key: String) -> JSONReader {
        JSONReader(value: v, source: source, path: path.isEmpty ? key : path + "." + key)
    }

    public func object() throws -> [String: JSONValue] {
        guard case .object(let d) = value else { throw fail("must be an object, got \(describe)") }
        return d
    }

    public func keys() throws -> [String] { Array(try object().keys) }

    public func field(_ key: String) throws -> JSONReader {
        guard let v = try object()[key] else {
            throw ESFTError(path.isEmpty ? "\(source): field '\(key)' is missing" : "\(source): field '\(path).\(key)' is missing")
        }
        return child(v, key)
    }

    /// nil when the field is absent or null.
    public func optionalField(_ key: String) throws -> JSONReader? {
        guard let v = try object()[key] else { return nil }
        if case .null = v { return nil }
        return child(v, key)
    }

    public func items() throws -> [JSONReader] {
        guard case .array(let a) = value else { throw fail("must be a list, got \(describe)") }
        return a.enumerated().map { JSONReader(value: $0.element, source: source, path: "\(path)[\($0.offset)]") }
    }

    public func string() throws -> String {
        guard case .string(let s) = value else { throw fail("must be a string, got \(describe)") }
        return s
    }

    public func bool() throws -> Bool {
        guard case .bool(let b) = value else { throw fail("must be true or false, got \(describe)") }
        return b
    }

    public func double() throws -> Double {
        guard case .number(let text) = value, let d = Double(text), d.isFinite else {
            throw fail("must be a finite number, got \(describe)")
        }
        return d
    }

    public func int() throws -> Int {
        guard case .number(let text) = value else { throw fail("must be an integer, got \(describe)") }
        if let i = Int(text) { return i }
        guard let d = Double(text), d == d.rounded(), abs(d) < 9e15 else { throw fail("must be an integer, got \(text)") }
        return Int(d)
    }

    /// The value as an error message shows it (strings quoted and cut at 40 characters).
    public var describe: String {
        switch value {
        case .null: return "null"
        case .bool(let b): return "\(b)"
        case .number(let t): return t
        case .string(let s): return "\"\(s.count > 40 ? String(s.prefix(40)) + "..." : s)\""
        case .array: return "a list"
        case .object: return "an object"
        }
    }
}

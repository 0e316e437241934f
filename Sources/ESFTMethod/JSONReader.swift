import ESFTKernels
import Foundation

/// Typed reads from a parsed JSON object; every error names the file and the field path.
struct JSONReader {
    let value: Any
    let source: String
    let path: String

    /// Parses a whole file; `what` says what the file should be ("scores file").
    static func load(_ url: URL, what: String) throws -> JSONReader {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw ESFTError("\(url.path): cannot read \(what) (\(error.localizedDescription))")
        }
        return try parse(data, source: url.path, what: what)
    }

    static func parse(_ data: Data, source: String, what: String) throws -> JSONReader {
        let object: Any
        do { object = try JSONSerialization.jsonObject(with: data) } catch {
            throw ESFTError("\(source): not valid JSON, expected a \(what)")
        }
        guard object is [String: Any] else { throw ESFTError("\(source): expected a JSON object at the top level (a \(what))") }
        return JSONReader(value: object, source: source, path: "")
    }

    func fail(_ what: String) -> ESFTError {
        ESFTError(path.isEmpty ? "\(source): \(what)" : "\(source): field '\(path)' \(what)")
    }

    private func child(_ v: Any, _ key: String) -> JSONReader {
        JSONReader(value: v, source: source, path: path.isEmpty ? key : path + "." + key)
    }

    var isNull: Bool { value is NSNull }

    func object() throws -> [String: Any] {
        guard let d = value as? [String: Any] else { throw fail("must be an object") }
        return d
    }

    func keys() throws -> [String] { Array(try object().keys) }

    func field(_ key: String) throws -> JSONReader {
        guard let v = try object()[key] else {
            throw ESFTError(path.isEmpty ? "\(source): field '\(key)' is missing" : "\(source): field '\(path).\(key)' is missing")
        }
        return child(v, key)
    }

    func optionalField(_ key: String) throws -> JSONReader? {
        guard let v = try object()[key], !(v is NSNull) else { return nil }
        return child(v, key)
    }

    func items() throws -> [JSONReader] {
        guard let a = value as? [Any] else { throw fail("must be a list") }
        return a.enumerated().map { JSONReader(value: $0.element, source: source, path: "\(path)[\($0.offset)]") }
    }

    private var isBool: Bool {
        guard let n = value as? NSNumber else { return false }
        return String(cString: n.objCType) == "c"
    }

    func string() throws -> String {
        guard let s = value as? String else { throw fail("must be a string") }
        return s
    }

    func bool() throws -> Bool {
        guard isBool, let b = value as? Bool else { throw fail("must be true or false") }
        return b
    }

    func double() throws -> Double {
        guard !isBool, !(value is String), let n = value as? NSNumber else { throw fail("must be a number, got \(describe)") }
        let d = n.doubleValue
        guard d.isFinite else { throw fail("must be a finite number, got \(describe)") }
        return d
    }

    func int() throws -> Int {
        guard !isBool, !(value is String), let n = value as? NSNumber, n.doubleValue == n.doubleValue.rounded(),
              abs(n.doubleValue) < 9e15 else { throw fail("must be an integer, got \(describe)") }
        return Int(n.doubleValue)
    }

    private var describe: String {
        if let s = value as? String { return "\"\(s)\"" }
        if value is NSNull { return "null" }
        if value is [Any] { return "a list" }
        if value is [String: Any] { return "an object" }
        return "\(value)"
    }
}

// Typed access to the untyped tree JSONSerialization returns, with errors that name the file
// and the field, so a bad tokenizer.json says exactly what is wrong.
// Not ESFTBase's JSONReader, on purpose: errors are TokenizerErrors (malformed/unsupported), the tree
// is walked by eight component parsers, and a real vocab plus merges is a few hundred thousand values,
// which JSONValue's decoder (trial decodes, type by type) would likely read more slowly. Moving it would
// change messages and speed for no gain in exactness (its numbers are token ids, which both read exactly).
import ESFTBase
import Foundation

struct TokenizerJSON {
    /// Shown in every error.
    let file: String

    func parse(_ data: Data) throws -> [String: Any] {
        let root: Any
        do {
            root = try JSONSerialization.jsonObject(with: data, options: [])
        } catch {
            throw TokenizerError.malformed(file: file, reason: "not valid JSON (\(ErrorText.reason(error)))")
        }
        guard let object = root as? [String: Any] else {
            throw TokenizerError.malformed(file: file, reason: "top level is not a JSON object")
        }
        return object
    }

    func malformed(_ reason: String) -> TokenizerError { .malformed(file: file, reason: reason) }
    func unsupported(_ feature: String) -> TokenizerError { .unsupported(file: file, feature: feature) }

    /// nil for a missing key and for JSON null.
    func optional(_ object: [String: Any], _ key: String) -> Any? {
        guard let value = object[key], !(value is NSNull) else { return nil }
        return value
    }

    func object(_ value: Any?, _ path: String) throws -> [String: Any] {
        guard let object = value as? [String: Any] else { throw malformed("\(path) must be an object") }
        return object
    }

    func array(_ value: Any?, _ path: String) throws -> [Any] {
        guard let array = value as? [Any] else { throw malformed("\(path) must be an array") }
        return array
    }

    func string(_ value: Any?, _ path: String) throws -> String {
        guard let string = value as? String else { throw malformed("\(path) must be a string") }
        return string
    }

    func int(_ value: Any?, _ path: String) throws -> Int {
        // true is an NSNumber too (1): a boolean is not an id.
        guard let number = value as? NSNumber, !isJSONBoolean(number), let int = Int(exactly: number.doubleValue) else {
            throw malformed("\(path) must be an integer, got \(value.map { isJSONBoolean($0) ? "\(($0 as? NSNumber)?.boolValue == true)" : "\($0)" } ?? "nothing")")
        }
        return int
    }

    /// A boolean field; `fallback` when it is missing or null.
    func bool(_ object: [String: Any], _ key: String, _ path: String, fallback: Bool) throws -> Bool {
        guard let value = optional(object, key) else { return fallback }
        guard let bool = value as? Bool else { throw malformed("\(path).\(key) must be true or false") }
        return bool
    }

    /// The "type" field every component object carries.
    func type(_ object: [String: Any], _ path: String) throws -> String {
        try string(object["type"], "\(path).type")
    }
}

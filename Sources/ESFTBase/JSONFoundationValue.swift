import Foundation

/// Whether a JSONSerialization value is a JSON boolean. On Linux `NSNumber(0) is Bool` is true, so the
/// test must look at the boxed type: JSON true/false arrive as CFBoolean (objCType "c").
public func isJSONBoolean(_ value: Any) -> Bool {
    guard let n = value as? NSNumber else { return value is Bool }
    return String(cString: n.objCType) == "c"
}

extension JSONValue {
    /// The tree JSONSerialization returns (or a `[String: Any]` literal) as a JSONValue, so such trees are
    /// read by the same JSONReader. Numbers keep a text form that reads back to the same Double or Int.
    public init(foundation value: Any) {
        switch value {
        case is NSNull: self = .null
        case let s as String: self = .string(s)
        case let d as [String: Any]: self = .object(d.mapValues(JSONValue.init(foundation:)))
        case let a as [Any]: self = .array(a.map(JSONValue.init(foundation:)))
        case let n as NSNumber:
            if isJSONBoolean(value) { self = .bool(n.boolValue); return }
            let type = String(cString: n.objCType)
            self = .number(type == "d" || type == "f" ? "\(n.doubleValue)" : n.stringValue)
        // Invariant: trees come from JSONSerialization (only the types above) or literals in our code.
        default: preconditionFailure("not a JSON value: \(type(of: value))")
        }
    }
}

extension JSONReader {
    /// Reads a JSONSerialization tree (or a `[String: Any]` literal) with errors naming `source`.
    public init(foundation value: Any, source: String) {
        self.init(value: JSONValue(foundation: value), source: source)
    }
}

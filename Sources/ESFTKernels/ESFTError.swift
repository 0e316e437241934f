import Foundation

/// An error a user can act on: it names the file and the field or tensor at fault.
/// Commands print `message` and exit non-zero; nothing else is shown.
public struct ESFTError: Error, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Whether a JSONSerialization value is a JSON boolean. On Linux `NSNumber(0) is Bool` is true, so the
/// test must look at the boxed type: JSON true/false arrive as CFBoolean (objCType "c").
public func isJSONBoolean(_ value: Any) -> Bool {
    guard let n = value as? NSNumber else { return value is Bool }
    return String(cString: n.objCType) == "c"
}

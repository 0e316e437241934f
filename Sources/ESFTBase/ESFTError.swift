/// An error a user can act on: it names the file and the field or tensor at fault.
/// Commands print `message` and exit non-zero; nothing else is shown.
public struct ESFTError: Error, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

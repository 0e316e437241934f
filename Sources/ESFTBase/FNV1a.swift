/// FNV-1a, 64 bit: a stable, dependency-free hash for fingerprints and data digests.
/// Not cryptographic; it tells accidental mismatches apart, it does not resist forgery.
public struct FNV1a64 {
    public private(set) var value: UInt64 = 0xcbf2_9ce4_8422_2325
    private static let prime: UInt64 = 0x0000_0100_0000_01b3

    public init() {}

    public mutating func add(_ bytes: UnsafeRawBufferPointer) {
        var h = value
        for b in bytes { h = (h ^ UInt64(b)) &* Self.prime }
        value = h
    }

    public mutating func add<T>(array: [T]) { array.withUnsafeBytes { add($0) } }

    /// The digest of a byte array in one call.
    public static func digest(_ bytes: [UInt8]) -> String {
        var d = FNV1a64()
        d.add(array: bytes)
        return d.hexDigest
    }

    public mutating func add(_ string: String) {
        var s = string
        s.withUTF8 { add(UnsafeRawBufferPointer($0)) }
    }

    /// "fnv1a64:" + 16 lower-case hex digits, the form stored in scores files.
    public var hexDigest: String {
        let hex = String(value, radix: 16)
        return "fnv1a64:" + String(repeating: "0", count: 16 - hex.count) + hex
    }
}

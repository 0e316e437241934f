// FNV-1a 64 for content digests (input files, tokenizer files, token datasets). ESFTMethod has
// its own copy; this one stays internal so the two never clash in a file importing both modules.

struct ContentDigest {
    private(set) var value: UInt64 = 0xcbf2_9ce4_8422_2325
    private static let prime: UInt64 = 0x0000_0100_0000_01b3

    init() {}

    mutating func add(_ bytes: UnsafeRawBufferPointer) {
        var h = value
        for b in bytes { h = (h ^ UInt64(b)) &* Self.prime }
        value = h
    }

    mutating func add<T>(array: [T]) { array.withUnsafeBytes { add($0) } }

    /// "fnv1a64:" + 16 lower-case hex digits, as the scores files spell it.
    var hexDigest: String {
        let hex = String(value, radix: 16)
        return "fnv1a64:" + String(repeating: "0", count: 16 - hex.count) + hex
    }

    static func of(_ bytes: [UInt8]) -> String {
        var d = ContentDigest()
        d.add(array: bytes)
        return d.hexDigest
    }
}

// GPT-2's byte-to-Unicode table: byte-level BPE vocabularies store each byte as a printable
// character, so vocab strings are valid JSON text. Printable Latin-1 bytes map to themselves;
// the other 68 bytes map to U+0100... in byte order.

enum ByteLevelAlphabet {
    /// Scalar value that stands for each byte in vocab strings.
    static let scalarOfByte: [UInt32] = {
        var table = [UInt32](repeating: 0, count: 256)
        var next: UInt32 = 256
        for byte in 0..<256 {
            let printable = (0x21...0x7E).contains(byte) || (0xA1...0xAC).contains(byte)
                || (0xAE...0xFF).contains(byte)
            if printable {
                table[byte] = UInt32(byte)
            } else {
                table[byte] = next
                next += 1
            }
        }
        return table
    }()

    /// Inverse of `scalarOfByte`, indexed by scalar value (all are below 0x144).
    static let byteOfScalar: [Int16] = {
        var table = [Int16](repeating: -1, count: 0x144)
        for (byte, scalar) in scalarOfByte.enumerated() { table[Int(scalar)] = Int16(byte) }
        return table
    }()

    /// The one-character vocab string of a byte.
    static func string(ofByte byte: UInt8) -> String {
        String(Character(Unicode.Scalar(scalarOfByte[Int(byte)])!))
    }

    /// The bytes a vocab string stands for, or nil if it has a character outside the alphabet
    /// (then it is not a byte-level token, e.g. a special token's content).
    static func bytes(ofToken token: String) -> [UInt8]? {
        var out = [UInt8]()
        out.reserveCapacity(token.unicodeScalars.count)
        for scalar in token.unicodeScalars {
            let value = Int(scalar.value)
            guard value < byteOfScalar.count, byteOfScalar[value] >= 0 else { return nil }
            out.append(UInt8(byteOfScalar[value]))
        }
        return out
    }
}

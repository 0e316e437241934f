// The simplest tokenizer: one id per UTF-8 byte, plus three special ids. Needs no files, so it
// is what tests and toy runs use.

/// Ids 0...255 are the raw UTF-8 bytes, then `bos` = 256, `eos` = 257, `pad` = 258.
///
/// `decode` drops the special ids (they have no text), so `decode(encode(s)) == s` for every
/// string, byte for byte, and a decoded training sample never contains invented markup.
public struct ByteTokenizer: TextTokenizer {
    public static let bos: Int32 = 256
    public static let eos: Int32 = 257
    public static let pad: Int32 = 258

    public var bosId: Int32 { Self.bos }
    public var eosId: Int32 { Self.eos }
    public var padId: Int32 { Self.pad }
    public var vocabSize: Int { 259 }

    public init() {}

    public func encode(_ text: String) -> [Int32] {
        var ids = [Int32]()
        ids.reserveCapacity(text.utf8.count)
        for byte in text.utf8 { ids.append(Int32(byte)) }
        return ids
    }

    /// `encode(text)` with `bos` in front and/or `eos` at the end.
    public func encode(_ text: String, addBos: Bool, addEos: Bool) -> [Int32] {
        var ids = [Int32]()
        ids.reserveCapacity(text.utf8.count + 2)
        if addBos { ids.append(Self.bos) }
        for byte in text.utf8 { ids.append(Int32(byte)) }
        if addEos { ids.append(Self.eos) }
        return ids
    }

    /// Bytes of the ids below 256, read as UTF-8; invalid sequences (a cut multi-byte
    /// character) become U+FFFD. Special and out-of-range ids are skipped.
    public func decode(_ ids: [Int32]) -> String {
        var bytes = [UInt8]()
        bytes.reserveCapacity(ids.count)
        for id in ids where id >= 0 && id < 256 { bytes.append(UInt8(id)) }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// Python's string trimming, for recipes and metrics that must treat text exactly as the ESFT reference's
/// Python does.
extension String {
    /// `str.strip()`: Python's whitespace is Unicode White_Space plus the separators U+001C...U+001F.
    public var pythonStripped: String {
        func isSpace(_ c: Unicode.Scalar) -> Bool { c.properties.isWhitespace || (0x1C...0x1F).contains(c.value) }
        let scalars = unicodeScalars
        guard let first = scalars.firstIndex(where: { !isSpace($0) }) else { return "" }
        return String(scalars[first...scalars.lastIndex(where: { !isSpace($0) })!])
    }

    /// `str.strip(chars)`: only those characters, from both ends.
    public func pythonStripped(of chars: Set<Character>) -> String {
        guard let first = firstIndex(where: { !chars.contains($0) }) else { return "" }
        return String(self[first...lastIndex(where: { !chars.contains($0) })!])
    }
}

// Regexes in tokenizer.json are written for Oniguruma (Ruby syntax), which the Hugging Face
// library uses; we run them with ICU through NSRegularExpression. The two agree on almost all
// syntax (\p{L}, \s = White_Space, lookaround, possessive and lazy quantifiers); this file
// rewrites the few constructs whose meaning differs, and reproduces Oniguruma's rule for empty
// matches, so splits come out identical.
import Foundation

enum OnigurumaRegex {
    /// Compiles an Oniguruma pattern; the error names the file and the pattern.
    static func compile(_ pattern: String, json: TokenizerJSON) throws -> NSRegularExpression {
        let icu = try icuPattern(pattern, json: json)
        do {
            return try NSRegularExpression(pattern: icu, options: [])
        } catch {
            throw json.unsupported("regex \(debugQuoted(pattern)) is not accepted by ICU (\(error.localizedDescription))")
        }
    }

    /// The ICU pattern with the meaning Oniguruma (Ruby syntax, UTF-8) gives `pattern`:
    /// - `^` and `$` are line anchors in Ruby (after / before "\n"), input anchors in ICU;
    /// - `.` excludes only "\n" in Ruby, every line terminator in ICU;
    /// - `\Z` allows only a final "\n" in Ruby, any final line terminator in ICU;
    /// - `\w` has ZWNJ and ZWJ in ICU, not in Oniguruma, which adds ² ³ ¹ ¼ ½ ¾ outside brackets
    ///   (measured on all code points; \p{L}, \p{N}, \p{M}, \p{P}, \p{S}, \p{Z}, \p{C}, \s and \d
    ///   agree exactly);
    /// - `\h` is a hex digit in Ruby, horizontal space in ICU;
    /// - `\p{^L}` (negated property) is Ruby-only.
    /// Inline option `m` (Ruby: dot matches newline; ICU: multi-line anchors) is refused.
    static func icuPattern(_ pattern: String, json: TokenizerJSON) throws -> String {
        let chars = Array(pattern.unicodeScalars)
        var out = String.UnicodeScalarView()
        var classDepth = 0
        var i = 0
        func emit(_ s: String) { out.append(contentsOf: s.unicodeScalars) }
        while i < chars.count {
            let c = chars[i]
            if c == "\\" {
                guard i + 1 < chars.count else { out.append(c); i += 1; continue }
                let n = chars[i + 1]
                switch n {
                case "w": emit(classDepth > 0 ? onigClassWord : onigWord)
                case "W": emit(classDepth > 0 ? onigClassNonWord : onigNonWord)
                case "h": emit(classDepth > 0 ? "0-9a-fA-F" : "[0-9a-fA-F]")
                case "H": emit("[^0-9a-fA-F]")
                case "Z" where classDepth == 0: emit("(?=\\n?\\z)")
                case "p", "P":
                    // \p{^X} -> \P{X}, \P{^X} -> \p{X}
                    if i + 3 < chars.count, chars[i + 2] == "{", chars[i + 3] == "^" {
                        emit(n == "p" ? "\\P{" : "\\p{")
                        i += 4
                        continue
                    }
                    out.append(c); out.append(n)
                default:
                    out.append(c); out.append(n)
                }
                i += 2
                continue
            }
            if classDepth > 0 {
                if c == "[" { classDepth += 1 }
                if c == "]" { classDepth -= 1 }
                out.append(c)
                i += 1
                continue
            }
            switch c {
            case "[":
                classDepth = 1
                out.append(c)
                // A "]" right after "[" or "[^" is a literal in Ruby; escape it for ICU.
                var j = i + 1
                if j < chars.count, chars[j] == "^" { out.append("^"); j += 1 }
                if j < chars.count, chars[j] == "]" { emit("\\]"); j += 1 }
                i = j
                continue
            case ".": emit("[^\\n]")
            case "$": emit("(?=\\n|\\z)")
            case "^": emit("(?:\\A|(?<=\\n)(?!\\z))")
            case "(":
                if i + 1 < chars.count, chars[i + 1] == "?" {
                    // Option groups like (?i) or (?mi-x:...): refuse Ruby's m.
                    var j = i + 2
                    while j < chars.count, "imx-".unicodeScalars.contains(chars[j]) {
                        if chars[j] == "m" {
                            throw json.unsupported("regex \(debugQuoted(pattern)) uses the Ruby inline option m (dot matches newline)")
                        }
                        j += 1
                    }
                }
                out.append(c)
            default: out.append(c)
            }
            i += 1
        }
        return String(out)
    }

    static let onigWord = "[[\\w\\u00b2\\u00b3\\u00b9\\u00bc-\\u00be]--[\\u200c\\u200d]]"
    static let onigNonWord = "[^[\\w\\u00b2\\u00b3\\u00b9\\u00bc-\\u00be]--[\\u200c\\u200d]]"
    static let onigClassWord = "[\\w--[\\u200c\\u200d]]"
    static let onigClassNonWord = "[^[\\w--[\\u200c\\u200d]]]"

    /// Matches of `regex` inside the UTF-16 range `start..<end` of `string`, as if that range
    /// were the whole input (lookaround and anchors do not see past it). Like Oniguruma's
    /// iterator, an empty match that starts where the previous match ended is dropped.
    static func matches(_ regex: NSRegularExpression, in string: String, start: Int, end: Int,
                        into out: inout [(Int, Int)]) {
        var lastEnd = -1
        var found = [(Int, Int)]()  // the block is escaping on Linux: it cannot capture `out`
        regex.enumerateMatches(in: string, options: [], range: NSRange(location: start, length: end - start)) { match, _, _ in
            guard let range = match?.range else { return }
            if range.length == 0 && range.location == lastEnd { return }
            found.append((range.location, range.location + range.length))
            lastEnd = range.location + range.length
        }
        out += found
    }

    static func debugQuoted(_ s: String) -> String {
        var quoted = ""
        for scalar in s.unicodeScalars { quoted += scalar.escaped(asASCII: false) }
        return "\"\(quoted)\""
    }
}

// Unicode normalizers of tokenizer.json. Only the four Unicode normal forms (alone or in a
// Sequence) are provided.
//
// Foundation's normalization on Linux (CFStringNormalize) has two bugs we work around:
// - NFC/NFKC compose a supplementary character as if it were the BMP character with the same low
//   16 bits: U+E0069 U+0301 (tag i, acute) becomes U+00ED "í". So composition uses the Swift
//   standard library's NFC instead (`_nfcCodeUnits`, the one String comparison relies on).
// - NFKD/NFKC do not reorder the combining marks a compatibility decomposition produces:
//   U+0385 U+0359 gives U+0020 U+0308 U+0359 U+0301 instead of U+0020 U+0359 U+0308 U+0301.
//   So decompositions are put in canonical order again here.
import Foundation

enum UnicodeNormalForm: String {
    case nfc = "NFC", nfd = "NFD", nfkc = "NFKC", nfkd = "NFKD"

    func apply(_ text: String) -> String {
        switch self {
        case .nfc: return Self.compose(text)
        case .nfd: return Self.canonicalOrder(text.decomposedStringWithCanonicalMapping)
        case .nfkc: return Self.compose(Self.canonicalOrder(text.decomposedStringWithCompatibilityMapping))
        case .nfkd: return Self.canonicalOrder(text.decomposedStringWithCompatibilityMapping)
        }
    }

    static func compose(_ text: String) -> String {
        String(decoding: text._nfcCodeUnits, as: UTF8.self)
    }

    /// Stable-sorts each run of combining marks (canonical combining class > 0) by class.
    static func canonicalOrder(_ text: String) -> String {
        // Every scalar with a non-zero class is at or above U+0300.
        guard text.unicodeScalars.contains(where: { $0.value >= 0x300 }) else { return text }
        var scalars = Array(text.unicodeScalars)
        var changed = false
        var i = 0
        while i < scalars.count {
            guard scalars[i].properties.canonicalCombiningClass.rawValue != 0 else { i += 1; continue }
            var j = i + 1
            while j < scalars.count, scalars[j].properties.canonicalCombiningClass.rawValue != 0 { j += 1 }
            if j - i > 1 {
                let run = scalars[i..<j].enumerated().sorted {
                    let a = $0.element.properties.canonicalCombiningClass.rawValue
                    let b = $1.element.properties.canonicalCombiningClass.rawValue
                    return a != b ? a < b : $0.offset < $1.offset
                }.map(\.element)
                if !run.elementsEqual(scalars[i..<j]) {
                    scalars.replaceSubrange(i..<j, with: run)
                    changed = true
                }
            }
            i = j
        }
        guard changed else { return text }
        var view = String.UnicodeScalarView()
        view.append(contentsOf: scalars)
        return String(view)
    }
}

/// The steps of a normalizer, applied in order; empty when tokenizer.json has none.
struct Normalizer {
    let steps: [UnicodeNormalForm]

    init(steps: [UnicodeNormalForm]) { self.steps = steps }

    /// Parses the "normalizer" field (null, NFC, NFD, NFKC, NFKD, or a Sequence of those).
    init(json value: Any?, _ json: TokenizerJSON) throws {
        var steps = [UnicodeNormalForm]()
        try Self.collect(value, path: "normalizer", into: &steps, json)
        self.steps = steps
    }

    private static func collect(_ value: Any?, path: String, into steps: inout [UnicodeNormalForm],
                                _ json: TokenizerJSON) throws {
        guard let value, !(value is NSNull) else { return }
        let object = try json.object(value, path)
        let type = try json.type(object, path)
        if type == "Sequence" {
            let items = try json.array(object["normalizers"], "\(path).normalizers")
            for (i, item) in items.enumerated() {
                try collect(item, path: "\(path).normalizers[\(i)]", into: &steps, json)
            }
        } else if let form = UnicodeNormalForm(rawValue: type) {
            steps.append(form)
        } else {
            throw json.unsupported("normalizer type \"\(type)\" at \(path) (supported: NFC, NFD, NFKC, NFKD, Sequence)")
        }
    }

    var isEmpty: Bool { steps.isEmpty }

    func apply(_ text: String) -> String {
        if steps.isEmpty { return text }
        // ASCII is in every normal form already; skip the Foundation round trip.
        if text.utf8.allSatisfy({ $0 < 0x80 }) { return text }
        // Normalize the runs between characters the reference tables do not know, and keep
        // those characters as they are (see `ReferenceUnicode`).
        let scalars = text.unicodeScalars
        var result = ""
        var runStart = scalars.startIndex
        var index = runStart
        while index != scalars.endIndex {
            let scalar = scalars[index]
            let after = scalars.index(after: index)
            if !ReferenceUnicode.knows(scalar) {
                result += normalizeRun(String(scalars[runStart..<index]))
                result.unicodeScalars.append(scalar)
                runStart = after
            }
            index = after
        }
        if runStart == scalars.startIndex { return normalizeRun(text) }
        result += normalizeRun(String(scalars[runStart...]))
        return result
    }

    private func normalizeRun(_ text: String) -> String {
        var result = text
        for step in steps { result = step.apply(result) }
        return result
    }
}

/// The Hugging Face library normalizes with the tables of the unicode-normalization-alignments
/// crate, which are Unicode 9.0 (measured with tokenizers 0.23: U+07FD, U+0C3C, U+32FF and the
/// other marks and compatibility characters assigned in 10.0 or later are left unchanged and not
/// reordered). To a normalizer, a character it has no data for is a starter without
/// decomposition or composition, so it splits the text into independently normalized runs.
/// Normalization data never changes for assigned characters (Unicode stability policy), so
/// "assigned by 9.0" is all we need to know.
enum ReferenceUnicode {
    static func knows(_ scalar: Unicode.Scalar) -> Bool {
        let value = Int(scalar.value)
        if value < 0x300 { return true }
        if value < 0x10000 { return bmp[value >> 6] & (1 << UInt64(value & 63)) != 0 }
        return isOldEnough(scalar)
    }

    private static func isOldEnough(_ scalar: Unicode.Scalar) -> Bool {
        guard let age = scalar.properties.age else { return false }
        return age.major < 9 || (age.major == 9 && age.minor == 0)
    }

    /// Bit per BMP code point: assigned by Unicode 9.0 (surrogates count as unknown).
    private static let bmp: [UInt64] = {
        var bits = [UInt64](repeating: 0, count: 1024)
        for value in 0..<0x10000 {
            if let scalar = Unicode.Scalar(UInt32(value)), isOldEnough(scalar) {
                bits[value >> 6] |= 1 << UInt64(value & 63)
            }
        }
        return bits
    }()
}

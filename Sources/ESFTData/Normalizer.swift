// Unicode normalizers of tokenizer.json. Only the four Unicode normal forms (alone or in a
// Sequence) are provided; they come from Foundation (ICU), the Hugging Face library uses the
// Rust unicode-normalization crate: both follow the Unicode algorithm, so they agree except on
// characters one side's Unicode version has not assigned yet.
import Foundation

enum UnicodeNormalForm: String {
    case nfc = "NFC", nfd = "NFD", nfkc = "NFKC", nfkd = "NFKD"

    func apply(_ text: String) -> String {
        switch self {
        case .nfc: return text.precomposedStringWithCanonicalMapping
        case .nfd: return text.decomposedStringWithCanonicalMapping
        case .nfkc: return text.precomposedStringWithCompatibilityMapping
        case .nfkd: return text.decomposedStringWithCompatibilityMapping
        }
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
        var result = text
        for step in steps { result = step.apply(result) }
        return result
    }
}

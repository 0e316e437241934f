import ESFTBase
import Foundation

/// scores.json: {"format": "esft-scores", "version": 1, "gate_scores": {layer: {expert: score}},
/// "token_scores": {...}, "metadata": {...}}. The two score maps have the shape of the reference
/// repository's routing summary.json.
extension RelevanceScores {
    public static let format = "esft-scores"
    public static let version = 1

    public func jsonData() -> Data {
        let m = metadata
        func scoreMap(_ byLayer: [Int: [Double]]) -> String {
            // `!`: scores hold exactly metadata.layers (made so, and checked so when read).
            JSONText.object(m.layers.map { ("\($0)", JSONText.expertMap(byLayer[$0]!)) }, indent: "  ")
        }
        let meta = JSONText.object([
            ("normalize", JSONText.string(m.normalize.rawValue)),
            ("samples", "\(m.samples)"), ("tokens", "\(m.tokens)"),
            ("top_k", "\(m.topK)"), ("experts", "\(m.experts)"),
            ("layers", JSONText.intList(m.layers)),
            ("model_fingerprint", JSONText.optionalString(m.modelFingerprint)),
            ("data_digest", JSONText.optionalString(m.dataDigest)),
            ("seed", JSONText.optionalInt(m.seed)), ("ranks", "\(m.ranks)"),
            ("source", JSONText.string(m.source)),
        ], indent: "  ")
        let text = JSONText.object([
            ("format", JSONText.string(Self.format)), ("version", "\(Self.version)"),
            ("gate_scores", scoreMap(gate)), ("token_scores", scoreMap(token)),
            ("metadata", meta),
        ])
        return Data((text + "\n").utf8)
    }

    public static func load(contentsOf url: URL) throws -> RelevanceScores {
        try RelevanceScores(json: JSONReader.load(url, what: "scores file (esft score --out)"))
    }

    public init(jsonData data: Data, source: String) throws {
        try self.init(json: JSONReader.parse(data, source: source, what: "scores file (esft score --out)"))
    }

    private init(json r: JSONReader) throws {
        guard let formatField = try r.optionalField("format") else {
            throw r.fail("has no 'format' field; expected \"\(Self.format)\" (write scores with esft score)")
        }
        let format = try formatField.string()
        guard format == Self.format else { throw formatField.fail("is '\(format)', expected '\(Self.format)'") }
        let versionField = try r.field("version")
        let version = try versionField.int()
        guard version == Self.version else {
            throw versionField.fail("is \(version); this esft reads version \(Self.version)")
        }
        let metadata = try Self.readMetadata(r.field("metadata"))
        gate = try Self.readScores(r.field("gate_scores"), metadata: metadata)
        token = try Self.readScores(r.field("token_scores"), metadata: metadata)
        self.metadata = metadata
    }

    private static func readMetadata(_ m: JSONReader) throws -> ScoresMetadata {
        let normalizeField = try m.field("normalize")
        let normalizeName = try normalizeField.string()
        guard let normalize = ScoreNormalization(rawValue: normalizeName) else {
            throw normalizeField.fail("is '\(normalizeName)', expected samples or tokens")
        }
        func count(_ key: String, min: Int) throws -> Int {
            let f = try m.field(key), v = try f.int()
            guard v >= min else { throw f.fail("must be ≥ \(min), got \(v)") }
            return v
        }
        let experts = try count("experts", min: 1)
        let topK = try count("top_k", min: 1)
        guard topK <= experts else { throw try m.field("top_k").fail("\(topK) exceeds experts \(experts)") }
        let layersField = try m.field("layers")
        let layers = try layersField.items().map { try $0.int() }
        guard !layers.isEmpty else { throw layersField.fail("must list at least one MoE layer") }
        guard Set(layers).count == layers.count, layers.allSatisfy({ $0 >= 0 }) else {
            throw layersField.fail("must list distinct layer indices ≥ 0, got \(layers)")
        }
        return ScoresMetadata(
            normalize: normalize, samples: try count("samples", min: 0), tokens: try count("tokens", min: 0),
            topK: topK, experts: experts, layers: layers,
            modelFingerprint: try m.optionalField("model_fingerprint")?.string(),
            dataDigest: try m.optionalField("data_digest")?.string(),
            seed: try m.optionalField("seed")?.int(), ranks: try count("ranks", min: 1),
            source: try m.optionalField("source")?.string() ?? "")
    }

    /// Exactly the layers of metadata.layers, each with experts "0"..."E-1".
    private static func readScores(_ field: JSONReader, metadata: ScoresMetadata) throws -> [Int: [Double]] {
        let listed = Set(metadata.layers.map(String.init))
        for key in try field.keys() where !listed.contains(key) {
            throw field.fail("has layer '\(key)', which metadata.layers \(metadata.layers) does not list")
        }
        var out: [Int: [Double]] = [:]
        for layer in metadata.layers {
            guard let perExpert = try field.optionalField("\(layer)") else {
                throw field.fail("is missing layer \(layer) (metadata.layers lists it)")
            }
            let e = metadata.experts
            for key in try perExpert.keys() where Int(key).map({ $0 < 0 || $0 >= e || "\($0)" != key }) ?? true {
                throw perExpert.fail("has expert '\(key)', expected experts 0...\(e - 1)")
            }
            out[layer] = try (0..<e).map { i in
                // A relevance score is a share of tokens or of gate weight: never negative.
                let value = try perExpert.field("\(i)")
                let score = try value.double()
                guard score >= 0 else { throw value.fail("is \(value.describe); a relevance score is a share (≥ 0)") }
                return score
            }
        }
        return out
    }
}

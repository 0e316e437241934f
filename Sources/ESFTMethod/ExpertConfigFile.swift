import ESFTBase
import Foundation

/// The JSON form: {"experts": {"1": [8, 26, 55], ...}, "shared_experts": false, "non_expert_modules": false}.
/// Layers are written in numeric order, one per line; readers of the reference's files do not care.
extension ExpertConfig {
    public func jsonData() -> Data {
        // `!`: `layers` is `experts.keys`, sorted.
        let lists = JSONText.object(layers.map { ("\($0)", JSONText.intList(experts[$0]!)) }, indent: "  ")
        let text = JSONText.object([
            ("experts", lists),
            ("shared_experts", "\(sharedExperts)"),
            ("non_expert_modules", "\(nonExpertModules)"),
        ])
        return Data((text + "\n").utf8)
    }

    public static func load(contentsOf url: URL) throws -> ExpertConfig {
        try ExpertConfig(json: JSONReader.load(url, what: "expert config"))
    }

    public init(jsonData data: Data, source: String) throws {
        try self.init(json: JSONReader.parse(data, source: source, what: "expert config"))
    }

    private init(json r: JSONReader) throws {
        for key in try r.keys() where !["experts", "shared_experts", "non_expert_modules"].contains(key) {
            throw r.fail("has unknown field '\(key)' (expected experts, shared_experts, non_expert_modules)")
        }
        let lists = try r.field("experts")
        var experts: [Int: [Int]] = [:]
        for key in try lists.keys() {
            guard let layer = Int(key), layer >= 0, "\(layer)" == key else {
                throw lists.fail("has key '\(key)', expected a layer index such as \"1\"")
            }
            experts[layer] = try lists.field(key).items().map { try $0.int() }
        }
        self.init(experts: experts,
                  sharedExperts: try r.optionalField("shared_experts")?.bool() ?? false,
                  nonExpertModules: try r.optionalField("non_expert_modules")?.bool() ?? false)
    }
}

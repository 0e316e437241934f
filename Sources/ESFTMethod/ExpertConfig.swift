import ESFTBase
import ESFTModel

/// Which experts train: the reference repository's expert_config.json.
/// `experts` maps every MoE layer to its routed expert ids in descending-score order.
public struct ExpertConfig: Equatable, Sendable {
    public var experts: [Int: [Int]]
    /// Also train the shared experts (mlp.shared_experts.*) of every MoE layer.
    public var sharedExperts: Bool
    /// Also train everything that is not an expert: attention, norms, router gates, embeddings,
    /// lm_head and dense MLPs.
    public var nonExpertModules: Bool

    public init(experts: [Int: [Int]], sharedExperts: Bool = false, nonExpertModules: Bool = false) {
        self.experts = experts; self.sharedExperts = sharedExperts; self.nonExpertModules = nonExpertModules
    }

    public init(_ selection: [LayerSelection], sharedExperts: Bool = false, nonExpertModules: Bool = false) {
        self.init(experts: Dictionary(uniqueKeysWithValues: selection.map { ($0.layer, $0.experts) }),
                  sharedExperts: sharedExperts, nonExpertModules: nonExpertModules)
    }

    public var layers: [Int] { experts.keys.sorted() }
    public var expertCount: Int { experts.values.reduce(0) { $0 + $1.count } }

    /// Checks the config fits the model; `source` (usually the file) starts every message.
    public func validate(against model: ModelConfig, source: String) throws {
        try validate(moeLayers: model.moeLayers, experts: model.nRoutedExperts, source: source)
        if sharedExperts && model.sharedExperts.width == 0 {
            throw ESFTError("\(source): shared_experts is true but the model has no shared experts")
        }
    }

    /// The structural part of validation, for when only the layer list and expert count are known
    /// (from a scores file).
    public func validate(moeLayers: [Int], experts e: Int, source: String) throws {
        let moe = Set(moeLayers)
        for layer in layers where !moe.contains(layer) {
            throw ESFTError("\(source): experts: layer \(layer) is not an MoE layer of the model (MoE layers: \(Self.describe(moeLayers)))")
        }
        let missing = moeLayers.filter { experts[$0] == nil }
        guard missing.isEmpty else {
            throw ESFTError("\(source): experts: MoE layer(s) \(missing.map(String.init).joined(separator: ", ")) missing; every MoE layer needs an entry (an empty list trains none of its experts)")
        }
        for layer in moeLayers {
            // `!`: the guard above threw for any MoE layer missing from `experts`.
            let ids = experts[layer]!
            if let bad = ids.first(where: { $0 < 0 || $0 >= e }) {
                throw ESFTError("\(source): experts: layer \(layer): expert id \(bad) is outside 0...\(e - 1) (the model has \(e) routed experts)")
            }
            var seen = Set<Int>()
            if let dup = ids.first(where: { !seen.insert($0).inserted }) {
                throw ESFTError("\(source): experts: layer \(layer): expert \(dup) is listed twice")
            }
        }
    }

    /// "1...26" for a contiguous run, else the list.
    static func describe(_ layers: [Int]) -> String {
        guard let first = layers.first, let last = layers.last else { return "none" }
        if layers == Array(first...last) && layers.count > 2 { return "\(first)...\(last)" }
        return layers.map(String.init).joined(separator: ", ")
    }
}

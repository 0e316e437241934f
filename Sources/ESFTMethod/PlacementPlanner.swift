import ESFTBase
import ESFTModel

/// `--placement`: how routed experts are spread over ranks.
public enum PlacementKind: String, CaseIterable, Sendable {
    /// Rank r owns a block of consecutive ids in every layer (the default).
    case contiguous
    /// Every layer's trainable experts spread evenly over ranks (optimizer memory and expert backward even).
    case balanced
    /// Experts often chosen by the same token share a rank (fewer dispatch rows), load kept even.
    case affinity

    public static func parse(_ text: String, option: String = "--placement") throws -> PlacementKind {
        guard let k = PlacementKind(rawValue: text) else {
            throw ESFTError("\(option) must be one of \(allCases.map(\.rawValue).joined(separator: ", ")), got '\(text)'")
        }
        return k
    }
}

/// The top-k choices of every token of one MoE layer (from routing logs or a routing pass): what the
/// affinity planner groups by and what dispatch rows are counted on.
public struct LayerRouting: Sendable {
    public let layer: Int
    public let experts: Int
    public let k: Int
    /// tokens × k global expert ids, token-major.
    public let ids: [Int32]

    public init(layer: Int, experts: Int, k: Int, ids: [Int32]) throws {
        guard k >= 1, ids.count % k == 0 else { throw ESFTError("routing of layer \(layer): \(ids.count) ids is not a multiple of top-k \(k)") }
        if let bad = ids.first(where: { $0 < 0 || Int($0) >= experts }) {
            throw ESFTError("routing of layer \(layer): expert id \(bad) is not in 0..<\(experts)")
        }
        self.layer = layer; self.experts = experts; self.k = k; self.ids = ids
    }

    public var tokens: Int { ids.count / k }

    /// Tokens that chose each expert.
    public var load: [Int] {
        var l = [Int](repeating: 0, count: experts)
        for e in ids { l[Int(e)] += 1 }
        return l
    }

    /// Dispatch rows under a placement: Σ over tokens of the distinct ranks owning its k experts (esft
    /// sends one row per (token, owner rank); the reference's scheme sends k, one per (token, expert)).
    public func rows(_ p: LayerPlacement) -> Int {
        var seen = [Int](repeating: -1, count: p.ranks), rows = 0
        for t in 0..<tokens {
            for j in 0..<k {
                let r = p.owner(of: Int(ids[t * k + j]))
                if seen[r] != t { seen[r] = t; rows += 1 }
            }
        }
        return rows
    }

    /// Per rank, the tokens its experts receive ((token, expert) pairs): the owners' expert work.
    public func rankLoad(_ p: LayerPlacement) -> [Int] {
        var l = [Int](repeating: 0, count: p.ranks)
        for (e, n) in load.enumerated() { l[p.owner(of: e)] += n }
        return l
    }
}

extension ReferenceRoutingLogs {
    /// Every layer's tokens, for placement planning (the logs' layer numbers are the model's layer indices).
    public func layerRoutings() throws -> [Int: LayerRouting] {
        Dictionary(uniqueKeysWithValues: try logs.map { ($0.layer, try LayerRouting(layer: $0.layer, experts: experts, k: topK, ids: $0.ids)) })
    }
}

/// Chooses an `ExpertPlacement`. Every strategy gives rank r the same number of experts in every layer
/// as contiguous blocks do (the first `experts % ranks` ranks one more), so memory for frozen experts
/// stays as even as today.
public struct PlacementPlanner {
    /// Affinity: a rank's share of the routed (token, expert) pairs may exceed the mean by this fraction.
    public var loadTolerance = 0.10

    public init() {}

    /// Experts per rank, as contiguous blocks have them.
    static func capacities(experts: Int, ranks: Int) -> [Int] {
        RangeSplit.contiguousBlocks(count: ranks, total: experts).map(\.count)
    }

    /// `trainable[layer]`: the experts that train there (balanced); `routing[layer]`: its tokens (affinity;
    /// a layer without routing keeps contiguous blocks, and the caller should say so).
    public func plan(_ kind: PlacementKind, experts: Int, ranks: Int, moeLayers: [Int], trainable: [Int: [Int]],
                     routing: [Int: LayerRouting]) throws -> ExpertPlacement {
        guard ranks >= 1 && (experts == 0 || ranks <= experts) else {
            throw ESFTError("placement: \(ranks) ranks for \(experts) experts per layer (need 1...\(experts))")
        }
        if kind == .contiguous { return ExpertPlacement(experts: experts, ranks: ranks) }
        if ranks == 1 || experts == 0 { return try ExpertPlacement(kind: kind.rawValue, experts: experts, ranks: ranks, layers: [:]) }
        var layers: [Int: LayerPlacement] = [:]
        var trainableSoFar = [Int](repeating: 0, count: ranks)
        for l in moeLayers {
            switch kind {
            case .contiguous: break
            case .balanced:
                let p = try Self.balanced(experts: experts, ranks: ranks, trainable: trainable[l] ?? [], tieBreak: trainableSoFar)
                for e in trainable[l] ?? [] { trainableSoFar[p.owner(of: e)] += 1 }
                layers[l] = p
            case .affinity:
                if let r = routing[l] {
                    guard r.experts == experts else {
                        throw ESFTError("placement: the routing of layer \(l) has \(r.experts) experts, the model \(experts)")
                    }
                    layers[l] = try AffinityRefinement(routing: r, ranks: ranks, loadTolerance: loadTolerance).run()
                }
            }
        }
        return try ExpertPlacement(kind: kind.rawValue, experts: experts, ranks: ranks, layers: layers)
    }

    /// Trainable experts first, each to the rank with the fewest trainable ones that has room, in ascending
    /// id order; ties go to the rank with the fewest in `tieBreak` (the earlier layers' trainable experts,
    /// so the whole job's optimizer state evens out too), then the lowest rank. The frozen ones then fill
    /// the remaining room in id order.
    public static func balanced(experts: Int, ranks: Int, trainable: [Int], tieBreak: [Int]? = nil) throws -> LayerPlacement {
        let capacity = capacities(experts: experts, ranks: ranks)
        let earlier = tieBreak ?? [Int](repeating: 0, count: ranks)
        var members = [[Int]](repeating: [], count: ranks)
        let chosen = Set(trainable)
        for e in chosen.sorted() {
            let r = (0..<ranks).filter { members[$0].count < capacity[$0] }
                .min { (members[$0].count, earlier[$0], $0) < (members[$1].count, earlier[$1], $1) }!
            members[r].append(e)
        }
        var r = 0
        for e in 0..<experts where !chosen.contains(e) {
            while members[r].count >= capacity[r] { r += 1 }
            members[r].append(e)
        }
        return try LayerPlacement(experts: experts, members: members)
    }
}

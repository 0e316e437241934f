import ESFTKernels

/// Which rank owns each routed expert of one MoE layer, and its index among that rank's experts (local
/// experts are in ascending global id order). Lookups are array reads.
public struct LayerPlacement: Equatable, Sendable {
    public let experts: Int
    public let ranks: Int
    /// Global ids per rank, ascending: rank r's local expert i is members[r][i].
    public let members: [[Int]]
    private let owners: [Int32]
    private let locals: [Int32]

    /// `members[r]` lists the global ids rank r owns; every id in 0..<experts exactly once.
    public init(experts: Int, members: [[Int]]) throws {
        let sorted = members.map { $0.sorted() }
        var owners = [Int32](repeating: -1, count: experts), locals = [Int32](repeating: -1, count: experts)
        for (r, ids) in sorted.enumerated() {
            for (i, e) in ids.enumerated() {
                guard e >= 0 && e < experts else { throw ESFTError("placement: expert \(e) is not in 0..<\(experts)") }
                guard owners[e] < 0 else { throw ESFTError("placement: expert \(e) is placed twice") }
                owners[e] = Int32(r); locals[e] = Int32(i)
            }
        }
        if let missing = owners.firstIndex(of: -1) { throw ESFTError("placement: expert \(missing) has no rank") }
        self.experts = experts; ranks = members.count; self.members = sorted
        self.owners = owners; self.locals = locals
    }

    /// Rank r owns a contiguous block of ids (the first `experts % ranks` blocks one longer).
    public static func contiguous(experts: Int, ranks: Int) -> LayerPlacement {
        let blocks = RangeSplit.contiguousBlocks(count: ranks, total: experts)
        // Cannot throw: contiguous blocks cover 0..<experts exactly once, which is all LayerPlacement checks.
        return try! LayerPlacement(experts: experts, members: blocks.map { Array($0) })
    }

    @inline(__always) public func owner(of expert: Int) -> Int { Int(owners[expert]) }
    @inline(__always) public func localIndex(of expert: Int) -> Int { Int(locals[expert]) }
    @inline(__always) public func globalId(rank: Int, local: Int) -> Int { members[rank][local] }
    /// Rank r's experts as the owner array (expert id → rank), e.g. for a summary.
    public var ownerArray: [Int] { owners.map(Int.init) }
}

/// How routed experts are spread over ranks, per MoE layer. `contiguous` (the default) gives every layer
/// the same id blocks; a planner (ESFTMethod's `PlacementPlanner`) may give each layer its own map. A
/// value, so the engine never knows how it was chosen.
public struct ExpertPlacement: Equatable, Sendable {
    public let experts: Int
    public let ranks: Int
    /// The strategy's name as `--placement` spells it (recorded in summary.json and checkpoints).
    public let kind: String
    /// The map of layers without their own entry.
    public let base: LayerPlacement
    /// Layer index → its map, where it differs from `base`.
    public let perLayer: [Int: LayerPlacement]

    public init(experts: Int, ranks: Int) {
        // Invariant: train refuses more ranks than experts (TrainInputs) and plan likewise, before placing.
        precondition(ranks >= 1 && (experts == 0 || ranks <= experts), "placement needs 1...experts ranks")
        self.experts = experts; self.ranks = ranks; kind = "contiguous"
        base = .contiguous(experts: experts, ranks: ranks); perLayer = [:]
    }

    /// A placement with its own map per layer (layers not listed use contiguous blocks).
    public init(kind: String, experts: Int, ranks: Int, layers: [Int: LayerPlacement]) throws {
        for (l, p) in layers where p.experts != experts || p.ranks != ranks {
            throw ESFTError("placement of layer \(l): \(p.experts) experts over \(p.ranks) ranks, expected \(experts) over \(ranks)")
        }
        self.experts = experts; self.ranks = ranks; self.kind = kind
        base = .contiguous(experts: experts, ranks: ranks); perLayer = layers
    }

    /// Every expert on one rank.
    public static func single(experts: Int) -> ExpertPlacement { ExpertPlacement(experts: experts, ranks: 1) }

    public func layer(_ l: Int) -> LayerPlacement { perLayer[l] ?? base }

    /// Whether rank r owns expert e of layer l (what the model loader maps).
    public func owns(rank: Int, layer l: Int, expert e: Int) -> Bool { layer(l).owner(of: e) == rank }

    /// The owner array of every listed layer (expert id → rank), for summary.json and checkpoint manifests.
    public func json(layers: [Int]) -> [String: Any] {
        ["kind": kind, "owners": Dictionary(uniqueKeysWithValues: layers.map { ("\($0)", layer($0).ownerArray) })]
    }
}

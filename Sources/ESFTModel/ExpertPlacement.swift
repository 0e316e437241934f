import ESFTKernels

/// Which rank owns each routed expert: rank r owns a contiguous block of global expert ids in every
/// MoE layer (the first `experts % ranks` blocks one longer). A value, so another placement (e.g.
/// selection-aware) can replace it later without touching the engine.
public struct ExpertPlacement: Equatable, Sendable {
    public let experts: Int
    public let ranks: Int
    public let ranges: [Range<Int>]
    private let owners: [Int32]

    public init(experts: Int, ranks: Int) {
        precondition(ranks >= 1 && (experts == 0 || ranks <= experts), "placement needs 1...experts ranks")
        self.experts = experts; self.ranks = ranks
        ranges = RangeSplit.contiguousBlocks(count: ranks, total: experts)
        var owners = [Int32](repeating: 0, count: experts)
        for (r, range) in ranges.enumerated() { for e in range { owners[e] = Int32(r) } }
        self.owners = owners
    }

    /// Every expert on one rank.
    public static func single(experts: Int) -> ExpertPlacement { ExpertPlacement(experts: experts, ranks: 1) }

    @inline(__always) public func owner(of expert: Int) -> Int { Int(owners[expert]) }
    @inline(__always) public func localIndex(of expert: Int) -> Int { expert - ranges[owner(of: expert)].lowerBound }
    public func globalId(rank: Int, local: Int) -> Int { ranges[rank].lowerBound + local }
}

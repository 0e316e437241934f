import ESFTBase
import ESFTModel

/// The affinity placement of one layer: experts that the same tokens choose share a rank, so a token's
/// top-k spans fewer ranks and dispatch sends fewer rows. Every rank keeps the contiguous expert count,
/// and its share of the routed (token, expert) pairs stays within `loadTolerance` of the mean.
///
/// 1. Greedy seeds: experts by descending load (then in `restarts` shuffled orders), each to the rank (with room and load headroom) whose
///    experts it co-occurs with most often (pair counts over tokens).
/// 2. Pairwise-swap refinement on the exact objective, rows = Σ_t |{owner ranks of t's experts}|: swap two
///    experts of different ranks when that lowers rows and keeps both ranks within the load bound, until
///    a pass finds none. The same refinement also runs from the contiguous blocks; the best result that
///    meets the bound wins.
public struct AffinityRefinement {
    public let routing: LayerRouting
    public let ranks: Int
    public let loadTolerance: Double
    /// Greedy seeds beyond the first, in shuffled expert orders (deterministic per layer).
    public var restarts = 15

    public init(routing: LayerRouting, ranks: Int, loadTolerance: Double) {
        self.routing = routing; self.ranks = ranks; self.loadTolerance = loadTolerance
    }

    public func run() throws -> LayerPlacement {
        let e = routing.experts, load = routing.load
        let capacity = PlacementPlanner.capacities(experts: e, ranks: ranks)
        let bound = (1 + loadTolerance) * Double(load.reduce(0, +)) / Double(ranks)
        let contiguous = LayerPlacement.contiguous(experts: e, ranks: ranks).ownerArray
        var best: (rows: Int, owner: [Int])?
        var rng = SplitMix64(seed: 0xE5F7 ^ UInt64(routing.layer))
        let byLoad = (0..<e).sorted { load[$0] != load[$1] ? load[$0] > load[$1] : $0 < $1 }
        // More greedy seeds, experts visited in shuffled orders: the swap search stops at local minima.
        let orders = [byLoad] + (0..<restarts).map { _ in Array(0..<e).shuffled(using: &rng) }
        let seeds = orders.map { greedySeed(order: $0, capacity: capacity, load: load, bound: bound) } + [contiguous]
        for seed in seeds {
            var state = SwapState(routing: routing, ranks: ranks, owner: seed)
            state.refine(load: load, bound: bound)
            // The incremental deltas must have tracked the objective exactly (debug builds, i.e. the tests).
            // `try!`: swaps keep every expert on exactly one rank, all that `placement` checks; debug builds only.
            assert(state.rows == routing.rows(try! Self.placement(state.owner, experts: e, ranks: ranks)), "swap deltas drifted")
            let fits = state.rankLoad.allSatisfy { Double($0) <= bound }
            if fits && state.rows < (best?.rows ?? Int.max) { best = (state.rows, state.owner) }
        }
        // Nothing met the bound: contiguous blocks, as without affinity.
        return try Self.placement(best?.owner ?? contiguous, experts: e, ranks: ranks)
    }

    private static func placement(_ owner: [Int], experts: Int, ranks: Int) throws -> LayerPlacement {
        var members = [[Int]](repeating: [], count: ranks)
        for (x, r) in owner.enumerated() { members[r].append(x) }
        return try LayerPlacement(experts: experts, members: members)
    }

    private func greedySeed(order: [Int], capacity: [Int], load: [Int], bound: Double) -> [Int] {
        let e = routing.experts, k = routing.k
        var pairs = [Int](repeating: 0, count: e * e)
        for t in 0..<routing.tokens {
            for i in 0..<k {
                let a = Int(routing.ids[t * k + i])
                for j in (i + 1)..<k {
                    let b = Int(routing.ids[t * k + j])
                    pairs[a * e + b] += 1; pairs[b * e + a] += 1
                }
            }
        }
        var owner = [Int](repeating: -1, count: e), count = [Int](repeating: 0, count: ranks)
        var rankLoad = [Int](repeating: 0, count: ranks), affinity = [Int](repeating: 0, count: ranks * e)
        for x in order {
            let open = (0..<ranks).filter { count[$0] < capacity[$0] }
            let fitting = open.filter { Double(rankLoad[$0] + load[x]) <= bound }
            let r = fitting.isEmpty
                ? open.min { rankLoad[$0] < rankLoad[$1] }!
                : fitting.max { (affinity[$0 * e + x], -rankLoad[$0]) < (affinity[$1 * e + x], -rankLoad[$1]) }!
            owner[x] = r; count[r] += 1; rankLoad[r] += load[x]
            for y in 0..<e { affinity[r * e + y] += pairs[x * e + y] }
        }
        return owner
    }
}

/// Per-token rank counts for fast swap deltas. gain[x][r] = Σ over x's tokens of
/// [no expert of t on r] − [x is t's only expert on its rank]: the change in rows if x alone moved to r.
/// A swap x↔y changes rows by gain[x][ry] + gain[y][rx] + (the tokens holding both, which that sum counts
/// wrongly: each adds back [x alone on rx] + [y alone on ry]).
private struct SwapState {
    let k: Int, ranks: Int, experts: Int
    let ids: [Int32]
    var owner: [Int]
    var count: [UInt8]             // tokens × ranks
    var tokensOf: [[Int32]]
    var gain: [Int]                // experts × ranks
    var rows = 0
    var rankLoad: [Int]

    init(routing: LayerRouting, ranks: Int, owner: [Int]) {
        k = routing.k; self.ranks = ranks; experts = routing.experts; ids = routing.ids; self.owner = owner
        let n = routing.tokens
        count = [UInt8](repeating: 0, count: n * ranks)
        tokensOf = [[Int32]](repeating: [], count: experts)
        rankLoad = [Int](repeating: 0, count: ranks)
        for t in 0..<n {
            for j in 0..<k {
                let x = Int(ids[t * k + j])
                count[t * ranks + owner[x]] += 1; tokensOf[x].append(Int32(t)); rankLoad[owner[x]] += 1
            }
            for r in 0..<ranks where count[t * ranks + r] > 0 { rows += 1 }
        }
        gain = [Int](repeating: 0, count: experts * ranks)
        for t in 0..<n { addGain(token: t, sign: 1) }
    }

    private mutating func addGain(token t: Int, sign: Int) {
        for j in 0..<k {
            let x = Int(ids[t * k + j]), rx = owner[x]
            let alone = count[t * ranks + rx] == 1 ? 1 : 0
            for r in 0..<ranks where r != rx {
                gain[x * ranks + r] += sign * ((count[t * ranks + r] == 0 ? 1 : 0) - alone)
            }
        }
    }

    private func holds(_ t: Int, _ y: Int) -> Bool {
        for j in 0..<k where Int(ids[t * k + j]) == y { return true }
        return false
    }

    private func delta(_ x: Int, _ y: Int) -> Int {
        let rx = owner[x], ry = owner[y]
        var d = gain[x * ranks + ry] + gain[y * ranks + rx]
        guard d < 0 else { return d }   // the correction is never negative
        for t32 in tokensOf[x] {
            let t = Int(t32)
            guard holds(t, y) else { continue }
            d += (count[t * ranks + rx] == 1 ? 1 : 0) + (count[t * ranks + ry] == 1 ? 1 : 0)
        }
        return d
    }

    private mutating func swap(_ x: Int, _ y: Int, delta d: Int) {
        let rx = owner[x], ry = owner[y]
        var touched = Set<Int32>(tokensOf[x]); touched.formUnion(tokensOf[y])
        for t in touched { addGain(token: Int(t), sign: -1) }
        for t in tokensOf[x] { count[Int(t) * ranks + rx] -= 1; count[Int(t) * ranks + ry] += 1 }
        for t in tokensOf[y] { count[Int(t) * ranks + ry] -= 1; count[Int(t) * ranks + rx] += 1 }
        let lx = tokensOf[x].count, ly = tokensOf[y].count
        rankLoad[rx] += ly - lx; rankLoad[ry] += lx - ly
        owner[x] = ry; owner[y] = rx
        for t in touched { addGain(token: Int(t), sign: 1) }
        rows += d
    }

    /// Best swap for each expert in turn, applied when it lowers rows within the load bound (a rank
    /// already above it may not grow); passes until none is found.
    mutating func refine(load: [Int], bound: Double) {
        var improved = true
        while improved {
            improved = false
            for x in 0..<experts {
                var best = 0, partner = -1
                for y in 0..<experts where owner[y] != owner[x] {
                    let rx = owner[x], ry = owner[y]
                    let newX = rankLoad[rx] - load[x] + load[y], newY = rankLoad[ry] - load[y] + load[x]
                    guard Double(newX) <= max(bound, Double(rankLoad[rx])), Double(newY) <= max(bound, Double(rankLoad[ry])) else { continue }
                    let d = delta(x, y)
                    if d < best { best = d; partner = y }
                }
                if partner >= 0 { swap(x, partner, delta: best); improved = true }
            }
        }
    }
}

/// The four all-to-all-v's of a MoE layer's dispatch, in the order a training step runs them.
public enum DispatchDirection: Int, CaseIterable, Sendable {
    case forwardDispatch, forwardCombine, backwardDispatch, backwardCombine

    /// The suffix of the collective's tag ("layer 3 forward dispatch") and the key in profile.json.
    public var name: String {
        switch self {
        case .forwardDispatch: "forward dispatch"
        case .forwardCombine: "forward combine"
        case .backwardDispatch: "backward dispatch"
        case .backwardCombine: "backward combine"
        }
    }

    /// Forward directions follow forward's routing; backward ones retrace it during backward.
    public var pass: DispatchPass { self == .forwardDispatch || self == .forwardCombine ? .forward : .backward }
}

public enum DispatchPass: Int, CaseIterable, Sendable { case forward, backward }

/// What expert-parallel dispatch moved on this rank, per MoE layer, since the last reset.
///
/// - `rowsSent`/`pairs`: the (token, rank) rows sent in forward next to the (token, expert) pairs routed.
///   Sending a token once per owner rank rather than once per expert is the difference.
/// - per peer: rows and payload bytes this rank sent to each rank, per layer and direction (the row
///   exchanges only; the count exchange is the communicator's).
/// - from the routing alone, independently of the dispatcher's plan: the (token, expert) pairs whose
///   expert lives on another rank, and the analytic minimum of rows, one per (token, other rank owning
///   at least one of its experts), per pass (forward, and backward where it ran).
///
/// Counters only, rank-local: nothing here communicates. Arrays grow on the first call that needs them
/// (a new layer index or rank count) and are updated in place afterwards.
public final class DispatchCounters {
    public private(set) var rowsSent: [Int: Int] = [:]
    public private(set) var pairs: [Int: Int] = [:]
    /// Ranks of the job, as seen by the calls so far (0 before the first).
    public private(set) var ranks = 0
    /// Layers with room in the arrays (indices 0..<layers; a layer without a MoE block stays zero).
    public private(set) var layers = 0
    private var peerRows: [Int64] = [], peerBytes: [Int64] = []   // [layer][direction][peer]
    private var minimum: [Int64] = []                             // [layer][pass][peer]
    private var offRankPairs: [Int64] = []                        // [layer]
    private var seenStamp: [Int] = []                             // [peer]: last token counted towards it

    public init() {}

    /// While true nothing is recorded (a recomputed forward: its rows were counted the first time).
    public var paused = false

    /// Rows to each peer (rank order) in one direction of one layer.
    public func rowsSent(layer: Int, _ d: DispatchDirection) -> [Int64] { slice(peerRows, layer, d) }
    /// Payload bytes to each peer (rank order) in one direction of one layer.
    public func bytesSent(layer: Int, _ d: DispatchDirection) -> [Int64] { slice(peerBytes, layer, d) }
    /// Analytic minimum of rows to each peer (0 for this rank itself) in one pass of one layer.
    public func minimumRows(layer: Int, _ pass: DispatchPass) -> [Int64] {
        guard layer < layers else { return [Int64](repeating: 0, count: ranks) }
        let base = (layer * DispatchPass.allCases.count + pass.rawValue) * ranks
        return Array(minimum[base..<(base + ranks)])
    }
    /// (token, expert) pairs of forward routed to an expert on another rank.
    public func pairsOffRank(layer: Int) -> Int64 { layer < layers ? offRankPairs[layer] : 0 }

    func record(layer: Int, rows: Int, pairs p: Int) {
        guard !paused else { return }
        rowsSent[layer, default: 0] += rows
        pairs[layer, default: 0] += p
    }

    /// One row exchange: `rowsTo[s]` rows of `rowBytes` bytes went to rank s.
    func recordSent(layer: Int, _ d: DispatchDirection, rowsTo: [Int], rowBytes: Int) {
        guard !paused else { return }
        ensure(layer: layer, ranks: rowsTo.count)
        let base = (layer * DispatchDirection.allCases.count + d.rawValue) * ranks
        for (s, r) in rowsTo.enumerated() {
            peerRows[base + s] += Int64(r)
            peerBytes[base + s] += Int64(r * rowBytes)
        }
    }

    /// The analytic minimum from one pass's routing: for every token, one row to each other rank that
    /// owns at least one of its K experts; in forward also the (token, expert) pairs routed off-rank.
    func recordRouting(layer: Int, _ pass: DispatchPass, topkIdx: UnsafePointer<Int32>, tokens n: Int, k: Int,
                       placement: LayerPlacement, rank: Int) {
        guard !paused else { return }
        ensure(layer: layer, ranks: placement.ranks)
        let base = (layer * DispatchPass.allCases.count + pass.rawValue) * ranks
        var off: Int64 = 0
        for s in 0..<ranks { seenStamp[s] = -1 }
        for t in 0..<n {
            for j in 0..<k {
                let owner = placement.owner(of: Int(topkIdx[t * k + j]))
                guard owner != rank else { continue }
                off += 1
                if seenStamp[owner] != t { seenStamp[owner] = t; minimum[base + owner] += 1 }
            }
        }
        if pass == .forward { offRankPairs[layer] += off }
    }

    public func reset() {
        rowsSent = [:]; pairs = [:]
        for i in peerRows.indices { peerRows[i] = 0; peerBytes[i] = 0 }
        for i in minimum.indices { minimum[i] = 0 }
        for i in offRankPairs.indices { offRankPairs[i] = 0 }
    }

    private func slice(_ a: [Int64], _ layer: Int, _ d: DispatchDirection) -> [Int64] {
        guard layer < layers else { return [Int64](repeating: 0, count: ranks) }
        let base = (layer * DispatchDirection.allCases.count + d.rawValue) * ranks
        return Array(a[base..<(base + ranks)])
    }

    /// Grows the arrays to hold `layer` with `ranks` peers (only on the first calls of a run).
    private func ensure(layer: Int, ranks r: Int) {
        if r == ranks && layer < layers { return }
        // Invariant: one run has one communicator, so the rank count never changes between calls.
        precondition(ranks == 0 || r == ranks, "dispatch counters: \(r) ranks after \(ranks)")
        let newLayers = max(layers, layer + 1), dirs = DispatchDirection.allCases.count, passes = DispatchPass.allCases.count
        func grown(_ a: [Int64], _ per: Int) -> [Int64] { a + [Int64](repeating: 0, count: (newLayers - layers) * per * r) }
        peerRows = grown(peerRows, dirs); peerBytes = grown(peerBytes, dirs)
        minimum = grown(minimum, passes)
        offRankPairs += [Int64](repeating: 0, count: newLayers - layers)
        if seenStamp.count != r { seenStamp = [Int](repeating: -1, count: r) }
        ranks = r; layers = newLayers
    }
}

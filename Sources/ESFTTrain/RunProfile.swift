import ESFTBase
import ESFTModel
import ESFTParallel
import Foundation

/// What this rank's training steps moved and how long they took, summed over the run: the dispatch
/// counters (per layer, direction and peer), the communicator's counters (bytes and seconds per tag)
/// and the wall time of the steps. Rank-local until `write`, which gathers every rank's record to
/// rank 0 once, at the end of the run, for OUT/profile.json (docs/formats.md).
final class RunProfileRecorder {
    let layers: Int, ranks: Int
    private(set) var steps = 0
    private var peerRows: [Int64], peerBytes: [Int64]    // [layer][direction][peer], this rank the source
    private var minimumRows: [Int64]                     // [layer][pass][peer]
    private var pairs: [Int64], pairsOffRank: [Int64]    // [layer]
    private var stats = CommunicationStats()
    private var wallSeconds = 0.0

    init(layers: Int, ranks: Int) {
        self.layers = layers; self.ranks = ranks
        peerRows = [Int64](repeating: 0, count: layers * DispatchDirection.allCases.count * ranks)
        peerBytes = peerRows
        minimumRows = [Int64](repeating: 0, count: layers * DispatchPass.allCases.count * ranks)
        pairs = [Int64](repeating: 0, count: layers); pairsOffRank = pairs
    }

    /// One training step: its dispatch counters, the communicator's counters taken at its end, and its
    /// wall time on this rank.
    func add(step counters: DispatchCounters, stats step: CommunicationStats, wallSeconds seconds: Double) {
        steps += 1; wallSeconds += seconds
        stats.merge(step)
        for l in 0..<min(layers, counters.layers) {
            for d in DispatchDirection.allCases {
                let base = (l * DispatchDirection.allCases.count + d.rawValue) * ranks
                for (p, v) in counters.rowsSent(layer: l, d).enumerated() { peerRows[base + p] += v }
                for (p, v) in counters.bytesSent(layer: l, d).enumerated() { peerBytes[base + p] += v }
            }
            for pass in DispatchPass.allCases {
                let base = (l * DispatchPass.allCases.count + pass.rawValue) * ranks
                for (p, v) in counters.minimumRows(layer: l, pass).enumerated() { minimumRows[base + p] += v }
            }
            pairs[l] += Int64(counters.pairs[l] ?? 0); pairsOffRank[l] += counters.pairsOffRank(layer: l)
        }
    }

    /// The record a rank sends to rank 0.
    private struct RankRecord: Codable {
        var peerRows: [Int64], peerBytes: [Int64], minimumRows: [Int64], pairs: [Int64], pairsOffRank: [Int64]
        var wallSeconds: Double
        var collectives: CommunicationSummary
    }

    /// Collective: every rank sends its record to rank 0, which writes `url` atomically.
    func write(_ url: URL, comm: Communicator, model: MoETransformer, firstStep: Int, tokensPerStep: Int) throws {
        let mine = RankRecord(peerRows: peerRows, peerBytes: peerBytes, minimumRows: minimumRows, pairs: pairs,
                              pairsOffRank: pairsOffRank, wallSeconds: wallSeconds, collectives: stats.summary(rank: comm.rank, size: comm.size))
        let gathered = try comm.gather(try JSONEncoder().encode(mine), toRoot: 0, tag: "profile")
        guard comm.rank == 0 else { return }
        let records = try gathered.map { try JSONDecoder().decode(RankRecord.self, from: $0) }
        let object = profile(records, model: model, firstStep: firstStep, tokensPerStep: tokensPerStep)
        let data = try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])
        try writeAtomically(to: url) { try $0.write(contentsOf: data) }
    }

    /// Payload bytes of one row per direction, from the dispatch protocol (docs/training.md): x and K
    /// weights as fp32 plus K Int32 slots out, D floats back; backward mirrors it.
    static func rowBytes(hidden d: Int, k: Int) -> [DispatchDirection: Int] {
        [.forwardDispatch: 4 * (d + 2 * k), .forwardCombine: 4 * d, .backwardDispatch: 4 * d, .backwardCombine: 4 * (d + k)]
    }

    /// "layer 3 forward dispatch" → "forward dispatch"; the MoE count exchange → "forward counts"; anything
    /// else (gradient all-reduce, loss, metrics) → "other".
    static func timeCategory(_ tag: String?) -> String {
        guard let tag, tag.hasPrefix("layer ") else { return "other" }
        let rest = tag.dropFirst("layer ".count).drop { $0.isNumber }.drop { $0 == " " }
        return rest.isEmpty ? "other" : String(rest)
    }
    static let timeCategories = ["forward counts"] + DispatchDirection.allCases.map(\.name) + ["other"]

    private func profile(_ records: [RankRecord], model: MoETransformer, firstStep: Int, tokensPerStep: Int) -> [String: Any] {
        let config = model.config, dirs = DispatchDirection.allCases, passes = DispatchPass.allCases
        let rowBytes = Self.rowBytes(hidden: config.hiddenSize, k: config.expertsPerToken)
        func matrix(_ pick: (RankRecord) -> [Int64], _ base: Int) -> [[Int64]] {
            records.map { r in Array(pick(r)[base..<(base + ranks)]) }
        }
        var measured: Int64 = 0, minimum: Int64 = 0, rowsOff: Int64 = 0, pairsOff: Int64 = 0
        var layerObjects: [[String: Any]] = []
        for l in config.moeLayers where l < layers {
            var rows: [String: Any] = [:], bytes: [String: Any] = [:], minimumByPass: [String: Any] = [:]
            var minimumRowsOf: [DispatchPass: [[Int64]]] = [:], dispatched: [[Int64]] = []
            for p in passes {
                let m = matrix(\.minimumRows, (l * passes.count + p.rawValue) * ranks)
                minimumRowsOf[p] = m
                minimumByPass[p == .forward ? "forward" : "backward"] = m
            }
            for d in dirs {
                let base = (l * dirs.count + d.rawValue) * ranks
                let r = matrix(\.peerRows, base), b = matrix(\.peerBytes, base)
                rows[d.name] = r; bytes[d.name] = b
                if d == .forwardDispatch { dispatched = r }
                for s in 0..<ranks { for t in 0..<ranks where t != s {
                    measured += b[s][t]
                    // `!`: minimumRowsOf holds every pass (filled above), rowBytes every direction (Self.rowBytes).
                    minimum += minimumRowsOf[d.pass]![s][t] * Int64(rowBytes[d]!)
                    if d == .forwardDispatch { rowsOff += r[s][t] }
                } }
            }
            let layerPairsOff = records.map { $0.pairsOffRank[l] }
            pairsOff += layerPairsOff.reduce(0, +)
            layerObjects.append([
                "layer": l, "rows": rows, "bytes": bytes, "minimum_rows": minimumByPass,
                "token_expert_pairs": records.map { $0.pairs[l] }, "pairs_off_rank": layerPairsOff,
                "received_rows": (0..<ranks).map { t in dispatched.reduce(Int64(0)) { $0 + $1[t] } },
                "owners": (0..<config.nRoutedExperts).map { model.placement.layer(l).owner(of: $0) },
            ])
        }
        let times: [[String: Any]] = records.enumerated().map { rank, r in
            var seconds = Dictionary(uniqueKeysWithValues: Self.timeCategories.map { ($0, 0.0) })
            for row in r.collectives.collectives { seconds[Self.timeCategory(row.tag), default: 0] += row.seconds }
            let inCollectives = seconds.values.reduce(0, +)
            // Waiting: time in a kind of collective beyond the least any rank spent in it (a lower
            // bound per rank: summed over the run, not per call).
            var waiting: [String: Double] = [:]
            for c in Self.timeCategories {
                let least = records.map { rr in rr.collectives.collectives.filter { Self.timeCategory($0.tag) == c }.reduce(0.0) { $0 + $1.seconds } }.min() ?? 0
                // `!`: `seconds` is filled for every time category above.
                waiting[c] = seconds[c]! - least
            }
            return ["rank": rank, "wall_seconds": r.wallSeconds, "compute_seconds": max(0, r.wallSeconds - inCollectives),
                    "collective_seconds": seconds, "waiting_seconds": waiting.values.reduce(0, +), "waiting_seconds_by_collective": waiting]
        }
        let collectives: [[[String: Any]]] = records.map { r in
            r.collectives.collectives.map { ["collective": $0.collective, "tag": $0.tag ?? NSNull(), "calls": $0.calls,
                                             "bytes_sent": $0.bytesSent, "seconds": $0.seconds] }
        }
        return [
            "format": "esft-profile", "version": 1, "ranks": ranks, "steps": steps, "first_step": firstStep,
            "tokens_per_step": tokensPerStep, "hidden_size": config.hiddenSize, "experts_per_token": config.expertsPerToken,
            "routed_experts": config.nRoutedExperts, "moe_layers": config.moeLayers,
            "placement": model.placement.kind,
            "row_bytes": Dictionary(uniqueKeysWithValues: rowBytes.map { ($0.key.name, $0.value) }),
            "layers": layerObjects, "time": times, "collectives": collectives,
            "totals": [
                "bytes_off_rank": measured, "minimum_bytes": minimum,
                "measured_over_minimum": minimum > 0 ? Double(measured) / Double(minimum) : NSNull(),
                "rows_off_rank": rowsOff, "pairs_off_rank": pairsOff,
                "dedup_ratio": pairsOff > 0 ? Double(rowsOff) / Double(pairsOff) : NSNull(),
            ] as [String: Any],
        ]
    }
}

import Foundation

/// The numbers `esft profile` prints, derived from profile.json's matrices (not from its totals, so the
/// report checks the writer): off-rank bytes per step and direction, the heaviest pair, load imbalance,
/// dedup ratio, analytic minimum, time split.
struct ProfileReport {
    let p: RunProfileFile
    let runDir: URL

    init(_ p: RunProfileFile, runDir: URL) { self.p = p; self.runDir = runDir }

    private var ranks: Int { p.ranks }
    private var perStep: Double { 1 / Double(p.steps) }

    /// Σ over layers and off-diagonal (source ≠ destination) entries of `pick`.
    private func offRank(_ pick: (RunProfileFile.Layer) -> [[Int]]) -> Int {
        p.layers.reduce(0) { sum, l in
            let m = pick(l)
            return sum + (0..<ranks).reduce(0) { s, a in s + (0..<ranks).reduce(0) { $0 + (a == $1 ? 0 : m[a][$1]) } }
        }
    }

    var bytesByDirection: [String: Int] {
        // The `!`s below: RunProfileFile's reader requires every direction and pass in every layer (ProfileCommand).
        Dictionary(uniqueKeysWithValues: RunProfileFile.directions.map { d in (d, offRank { $0.bytes[d]! }) })
    }
    var measuredBytes: Int { bytesByDirection.values.reduce(0, +) }
    var minimumBytes: Int {
        RunProfileFile.directions.reduce(0) { sum, d in
            sum + offRank { $0.minimumRows[RunProfileFile.pass(d)]! } * p.rowBytes[d]!
        }
    }
    var rowsOffRank: Int { offRank { $0.rows["forward dispatch"]! } }
    var pairsOffRank: Int { p.layers.reduce(0) { $0 + $1.pairsOffRank.reduce(0, +) } }

    /// Bytes per (source, destination) over all layers and directions.
    var pairBytes: [[Int]] {
        var m = [[Int]](repeating: [Int](repeating: 0, count: ranks), count: ranks)
        for l in p.layers { for d in RunProfileFile.directions { for s in 0..<ranks { for t in 0..<ranks { m[s][t] += l.bytes[d]![s][t] } } } }
        return m
    }

    var text: String {
        var out = ""
        func line(_ s: String) { out += s + "\n" }
        func bytes(_ b: Double) -> String {
            b >= 1e9 ? String(format: "%.3f GB", b / 1e9) : b >= 1e6 ? String(format: "%.3f MB", b / 1e6)
                : b >= 1e3 ? String(format: "%.3f kB", b / 1e3) : String(format: "%.0f B", b)
        }
        line("esft profile: \(runDir.path): \(ranks) rank\(ranks == 1 ? "" : "s"), \(p.steps) step\(p.steps == 1 ? "" : "s") from step \(p.firstStep), \(p.tokensPerStep) tokens per step, MoE layers \(p.layers.map { "\($0.layer)" }.joined(separator: " "))")
        line("")
        line("Bytes sent to other ranks per step (expert-parallel rows; run total in bytes):")
        let byDirection = bytesByDirection
        func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s : s + String(repeating: " ", count: n - s.count) }
        func left(_ s: String, _ n: Int) -> String { s.count >= n ? s : String(repeating: " ", count: n - s.count) + s }
        for d in RunProfileFile.directions {
            line("  \(pad(d, 18)) \(left(bytes(Double(byDirection[d]!) * perStep), 12))   (total \(byDirection[d]!))")
        }
        line("  \(pad("all directions", 18)) \(left(bytes(Double(measuredBytes) * perStep), 12))   (total \(measuredBytes))")
        if ranks > 1 {
            let m = pairBytes
            let (s, t) = (0..<ranks).flatMap { a in (0..<ranks).filter { $0 != a }.map { (a, $0) } }.max { m[$0.0][$0.1] < m[$1.0][$1.1] }!
            line(String(format: "Heaviest pair: rank %d → rank %d, %@ per step (%.1f%% of the off-rank bytes)", s, t,
                        bytes(Double(m[s][t]) * perStep), measuredBytes > 0 ? 100 * Double(m[s][t]) / Double(measuredBytes) : 0))
        }
        line("")
        line("Rows received per rank per step (forward dispatch, own rows included; imbalance = max ÷ mean):")
        for l in p.layers {
            let r = l.receivedRows.map { Double($0) * perStep }, mean = r.reduce(0, +) / Double(ranks)
            let cells = r.enumerated().map { String(format: "rank %d %.1f", $0.offset, $0.element) }.joined(separator: "  ")
            line(String(format: "  layer %-3d %@   imbalance %.3f", l.layer, cells, mean > 0 ? r.max()! / mean : 1))
        }
        line("")
        let dedup = pairsOffRank > 0 ? String(format: "%.4f", Double(rowsOffRank) / Double(pairsOffRank)) : "n/a (nothing routed off-rank)"
        line("Dedup ratio: \(rowsOffRank) rows sent off-rank ÷ \(pairsOffRank) (token, expert) pairs routed off-rank = \(dedup)")
        let ratio = minimumBytes > 0 ? String(format: "%.4f", Double(measuredBytes) / Double(minimumBytes)) : "n/a (minimum is 0)"
        line("Analytic minimum: \(minimumBytes) bytes (one row per (token, other rank owning one of its experts) × row bytes); measured \(measuredBytes) bytes; measured ÷ minimum = \(ratio) (goal 1.00)")
        line("")
        let categories = ["forward counts"] + RunProfileFile.directions + ["other"]
        line("Time per step, seconds (collectives include waiting for other ranks; waiting = beyond the fastest rank):")
        line("  rank " + ["wall", "compute"].map { $0.padding(toLength: 9, withPad: " ", startingAt: 0) }.joined()
             + categories.map { $0.replacingOccurrences(of: "forward ", with: "fwd ").replacingOccurrences(of: "backward ", with: "bwd ").padding(toLength: 13, withPad: " ", startingAt: 0) }.joined() + "waiting")
        for (rank, t) in p.time.enumerated() {
            let cells = [t.wall, t.compute].map { String(format: "%-9.4f", $0 * perStep) }.joined()
                + categories.map { String(format: "%-13.4f", (t.collectives[$0] ?? 0) * perStep) }.joined()
            line(String(format: "  %-4d ", rank) + cells + String(format: "%.4f", t.waiting * perStep))
        }
        return out
    }
}

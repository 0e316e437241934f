import ESFTTestSupport
import Foundation
import XCTest

/// OUT/profile.json from a real 2-rank `mpirun` training run, and `esft profile` on it: the per-peer
/// matrices against the communicator's per-tag bytes in metrics.jsonl, the analytic minimum against our
/// dedup scheme (exactly one row per (token, other owner rank)), the report's numbers against the file,
/// and the PNG pictures (valid files of the size the script's figure size × DPI gives).
final class ProfileTests: TrainTestCase {
    override class var tag: String { "profile" }
    static let directions = ["forward dispatch", "forward combine", "backward dispatch", "backward combine"]

    func testTwoRankRunProfileReportAndPictures() throws {
        let steps = 4
        // Validation runs at step 4 (the last): its exchanges must not enter the profile, as they do not enter metrics.
        let run = try train(ranks: 2, ["--experts", path("experts.json")], tag: "run", steps: steps)
        let profileURL = run.out.appendingPathComponent("profile.json")
        let p = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: profileURL)) as? [String: Any])
        XCTAssertEqual(p["format"] as? String, "esft-profile")
        XCTAssertEqual(p["ranks"] as? Int, 2)
        XCTAssertEqual(p["steps"] as? Int, steps)
        XCTAssertEqual(p["moe_layers"] as? [Int], [1, 2], "tiny.json: first_k_dense_replace 1, 3 layers")
        XCTAssertEqual(p["placement"] as? String, "contiguous")
        for layer in try XCTUnwrap(p["layers"] as? [[String: Any]]) {
            XCTAssertEqual(layer["owners"] as? [Int], [Int](repeating: 0, count: 8) + [Int](repeating: 1, count: 8), "contiguous blocks of 8")
        }
        // tiny.json: D = 64, K = 4. Rows are [x | K weights] fp32 + K Int32 slots out, D floats back.
        let d = 64, k = 4
        let rowBytes = try XCTUnwrap(p["row_bytes"] as? [String: Int])
        XCTAssertEqual(rowBytes, ["forward dispatch": 4 * (d + 2 * k), "forward combine": 4 * d,
                                  "backward dispatch": 4 * d, "backward combine": 4 * (d + k)])
        let lines = try metrics(run.out)
        XCTAssertEqual(lines.count, steps)
        func metricBytes(_ key: String) -> Int {
            lines.reduce(0) { $0 + Int(((($1["comm"] as? [String: Any])?[key] as? Double) ?? 0)) }
        }
        let layers = try XCTUnwrap(p["layers"] as? [[String: Any]])
        XCTAssertEqual(layers.count, 2)
        var offBytes = 0, offRows = 0, offPairs = 0, minimumBytes = 0
        func off(_ m: [[Int]]) -> Int { m[0][1] + m[1][0] }
        for layer in layers {
            let l = layer["layer"] as! Int
            let rows = layer["rows"] as! [String: [[Int]]], bytes = layer["bytes"] as! [String: [[Int]]]
            let minimum = layer["minimum_rows"] as! [String: [[Int]]]
            for dir in Self.directions {
                // The per-peer bytes equal what the communicator counted for this layer's tag, summed over the
                // steps' metrics lines (bytes_sent excludes a rank's rows to itself, so off-diagonal only). Exact:
                // both are integer byte counts of the same calls.
                XCTAssertEqual(off(bytes[dir]!), metricBytes("allToAllV layer \(l) \(dir)"), "layer \(l) \(dir)")
                for s in 0..<2 { for t in 0..<2 { XCTAssertEqual(bytes[dir]![s][t], rows[dir]![s][t] * rowBytes[dir]!) } }
                // Our scheme sends exactly the analytic minimum: one row per (token, other rank owning one of its experts).
                let pass = dir.hasPrefix("forward") ? "forward" : "backward"
                XCTAssertEqual(off(rows[dir]!), off(minimum[pass]!), "layer \(l) \(dir): measured rows = minimum")
                XCTAssertEqual(minimum[pass]![0][0] + minimum[pass]![1][1], 0, "a rank's own rows are not in the minimum")
                offBytes += off(bytes[dir]!); minimumBytes += off(minimum[pass]!) * rowBytes[dir]!
            }
            // Backward retraces forward: the same rows out, and the combines send back what the dispatches brought.
            XCTAssertEqual(rows["backward dispatch"]!, rows["forward dispatch"]!)
            XCTAssertEqual(rows["forward combine"]!, [[rows["forward dispatch"]![0][0], rows["forward dispatch"]![1][0]],
                                                      [rows["forward dispatch"]![0][1], rows["forward dispatch"]![1][1]]])
            XCTAssertEqual(rows["backward combine"]!, rows["forward combine"]!)
            // Rows and pairs against metrics' own dispatch counters (all rows, own included).
            let dispatched = rows["forward dispatch"]!
            let metricRows = lines.reduce(0) { $0 + Int((($1["dispatch"] as! [String: [String: Double]])["\(l)"]!["rows_sent"]!)) }
            let metricPairs = lines.reduce(0) { $0 + Int((($1["dispatch"] as! [String: [String: Double]])["\(l)"]!["token_expert_pairs"]!)) }
            XCTAssertEqual(dispatched.joined().reduce(0, +), metricRows)
            XCTAssertEqual((layer["token_expert_pairs"] as! [Int]).reduce(0, +), metricPairs)
            XCTAssertEqual(metricPairs, steps * Self.rows * Self.seqLen * k, "every token of every step picks K experts")
            XCTAssertEqual(layer["received_rows"] as! [Int], [dispatched[0][0] + dispatched[1][0], dispatched[0][1] + dispatched[1][1]])
            let pairsOff = (layer["pairs_off_rank"] as! [Int]).reduce(0, +)
            // A row carries 1...K of its token's off-rank pairs.
            XCTAssertLessThanOrEqual(off(dispatched), pairsOff)
            XCTAssertGreaterThanOrEqual(off(dispatched) * k, pairsOff)
            offRows += off(dispatched); offPairs += pairsOff
        }
        XCTAssertGreaterThan(offRows, 0, "random routing over 2 ranks sends rows across")
        // Every collective of the steps: the ranks' counters in the profile sum to metrics' comm_bytes (integers, exact).
        let collectives = try XCTUnwrap(p["collectives"] as? [[[String: Any]]])
        XCTAssertEqual(collectives.joined().reduce(0) { $0 + ($1["bytes_sent"] as! Int) },
                       lines.reduce(0) { $0 + Int($1["comm_bytes"] as! Double) })
        let totals = try XCTUnwrap(p["totals"] as? [String: Any])
        XCTAssertEqual(totals["bytes_off_rank"] as? Int, offBytes)
        XCTAssertEqual(totals["minimum_bytes"] as? Int, minimumBytes)
        XCTAssertEqual(totals["measured_over_minimum"] as? Double, 1.0, "exact: equal integers")
        XCTAssertEqual(totals["rows_off_rank"] as? Int, offRows)
        XCTAssertEqual(totals["pairs_off_rank"] as? Int, offPairs)
        // Time: compute + collectives = wall (compute is their difference, clamped at 0), waiting within collectives.
        for t in try XCTUnwrap(p["time"] as? [[String: Any]]) {
            let wall = t["wall_seconds"] as! Double, compute = t["compute_seconds"] as! Double
            let collectives = (t["collective_seconds"] as! [String: Double]).values.reduce(0, +)
            XCTAssertGreaterThan(wall, 0)
            XCTAssertEqual(compute, max(0, wall - collectives), accuracy: 1e-9 * wall, "sums of ≤ 100 doubles: relative rounding ≪ 1e-9")
            XCTAssert((0...collectives).contains(t["waiting_seconds"] as! Double))
        }

        // The report: every number from the file's matrices.
        let r = try Executables.esft(["profile", run.out.path])
        XCTAssertEqual(r.status, 0, r.stderr)
        let report = r.stdout, reportLines = report.split(separator: "\n").map(String.init)
        func hasLine(_ head: String, total: Int) -> Bool {
            reportLines.contains { $0.hasPrefix("  " + head.padding(toLength: 18, withPad: " ", startingAt: 0)) && $0.hasSuffix("(total \(total))") }
        }
        for dir in Self.directions {
            let total = layers.reduce(0) { $0 + off(($1["bytes"] as! [String: [[Int]]])[dir]!) }
            XCTAssert(hasLine(dir, total: total), "\(dir) \(total):\n\(report)")
        }
        XCTAssert(hasLine("all directions", total: offBytes), report)
        let ratio = String(format: "%.4f", Double(offRows) / Double(offPairs))
        XCTAssert(report.contains("Dedup ratio: \(offRows) rows sent off-rank ÷ \(offPairs) (token, expert) pairs routed off-rank = \(ratio)"), report)
        XCTAssert(report.contains("Analytic minimum: \(minimumBytes) bytes"), report)
        XCTAssert(report.contains("measured \(offBytes) bytes; measured ÷ minimum = 1.0000 (goal 1.00)"), report)
        let pair = (0..<2).map { s in layers.reduce(0) { sum, l in sum + Self.directions.reduce(0) { $0 + (l["bytes"] as! [String: [[Int]]])[$1]![s][1 - s] } } }
        let heavy = pair[0] >= pair[1] ? 0 : 1
        XCTAssert(report.contains("Heaviest pair: rank \(heavy) → rank \(1 - heavy)"), report)
        for layer in layers {
            let received = (layer["received_rows"] as! [Int]).map { Double($0) / Double(steps) }
            let imbalance = received.max()! / (received.reduce(0, +) / 2)
            XCTAssert(report.contains(String(format: "layer %-3d rank 0 %.1f  rank 1 %.1f   imbalance %.3f", layer["layer"] as! Int,
                                             received[0], received[1], imbalance)), report)
        }

        // The pictures.
        let probe = try Executables.run(URL(fileURLWithPath: "/usr/bin/env"), ["python3", "-c", "import matplotlib"])
        guard probe.status == 0 else {
            XCTAssert(report.contains("pictures skipped"), report)
            throw XCTSkip("python3 with matplotlib is not available, pictures not checked: \(probe.stderr.suffix(200))")
        }
        // Sizes: scripts/profile_plots.py draws heatmaps at 8 × 6 in and charts at 10 × 6 in, at 100 DPI, without a tight box.
        var expected = ["heatmap_all_layers.png": (800, 600), "bytes_per_layer_direction.png": (1000, 600),
                        "rows_received.png": (1000, 600), "time_split.png": (1000, 600)]
        for l in [1, 2] { expected["heatmap_layer_\(l).png"] = (800, 600) }
        let pictures = run.out.appendingPathComponent("profile")
        XCTAssertEqual(Set(try FileManager.default.contentsOfDirectory(atPath: pictures.path)), Set(expected.keys), "nothing else (no temporary files)")
        for (name, size) in expected {
            let data = try Data(contentsOf: pictures.appendingPathComponent(name))
            XCTAssert(report.contains("wrote \(pictures.appendingPathComponent(name).path)"), report)
            let png = try XCTUnwrap(PNGHeader(data), "\(name) is not a PNG")
            XCTAssertEqual(png.width, size.0, name); XCTAssertEqual(png.height, size.1, name)
            XCTAssertGreaterThan(data.count, 5000, "\(name): a drawn picture, not an empty canvas")
        }
    }

    /// A damaged profile.json: the error names the file and the field, the exit is non-zero, and no pictures are made.
    func testDamagedProfileIsRejected() throws {
        let out = dir.appendingPathComponent("damaged")
        try? FileManager.default.removeItem(at: out)
        try FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)
        let missing = try Executables.esft(["profile", out.path])
        XCTAssertNotEqual(missing.status, 0)
        XCTAssert(missing.stderr.contains("\(out.path)/profile.json: no profile"), missing.stderr)
        let row = #"{"forward dispatch": [[1, 2], [3, 4]], "forward combine": [[1, 3], [2, 4]], "backward dispatch": [[1, 2], [3, 4]], "backward combine": [[1, 3], [2, 4]]}"#
        func profile(bytes: String) -> String {
            #"{"format": "esft-profile", "version": 1, "ranks": 2, "steps": 1, "first_step": 1, "tokens_per_step": 8, "routed_experts": 2, "placement": "contiguous", "#
            + #""row_bytes": {"forward dispatch": 10, "forward combine": 10, "backward dispatch": 10, "backward combine": 10}, "#
            + #""layers": [{"layer": 1, "rows": \#(row), "bytes": \#(bytes), "minimum_rows": {"forward": [[0, 2], [3, 0]], "backward": [[0, 2], [3, 0]]}, "#
            + #""token_expert_pairs": [8, 8], "pairs_off_rank": [4, 4], "received_rows": [4, 6], "owners": [0, 1]}], "#
            + #""time": [{"wall_seconds": 1, "compute_seconds": 1, "collective_seconds": {}, "waiting_seconds": 0}, {"wall_seconds": 1, "compute_seconds": 1, "collective_seconds": {}, "waiting_seconds": 0}]}"#
        }
        let good = #"{"forward dispatch": [[10, 20], [30, 40]], "forward combine": [[10, 30], [20, 40]], "backward dispatch": [[10, 20], [30, 40]], "backward combine": [[10, 30], [20, 40]]}"#
        let file = out.appendingPathComponent("profile.json")
        try Data(profile(bytes: good).utf8).write(to: file)
        let ok = try Executables.esft(["profile", out.path, "--no-pictures"])
        XCTAssertEqual(ok.status, 0, "the hand-made profile is valid: \(ok.stderr)")
        XCTAssert(ok.stdout.contains("measured ÷ minimum = 1.0000"), ok.stdout)
        for (bytes, field) in [(good.replacingOccurrences(of: "[[10, 20], [30, 40]], \"forward combine\"", with: "[[10, 20]], \"forward combine\""),
                                "layers[0].bytes.forward dispatch' must be 2 × 2"),
                               (good.replacingOccurrences(of: "[[10, 30], [20, 40]], \"backward dispatch\"", with: "[[10, 30], [20, 41]], \"backward dispatch\""),
                                "layers[0].bytes.forward combine' [1][1] is 41, but 4 rows of 10 bytes make 40")] {
            try Data(profile(bytes: bytes).utf8).write(to: file)
            let r = try Executables.esft(["profile", out.path])
            XCTAssertNotEqual(r.status, 0)
            XCTAssert(r.stderr.contains("\(file.path): field '\(field)"), r.stderr)
            XCTAssertFalse(FileManager.default.fileExists(atPath: out.appendingPathComponent("profile").path), "no pictures from a bad profile")
        }
    }
}

/// Width and height from a PNG's signature and IHDR chunk (the first chunk, by the PNG specification).
struct PNGHeader {
    let width: Int, height: Int
    init?(_ data: Data) {
        let b = [UInt8](data.prefix(24))
        guard b.count == 24, b[0..<8] == [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A], b[12..<16] == [0x49, 0x48, 0x44, 0x52] else { return nil }
        func be(_ i: Int) -> Int { b[i..<(i + 4)].reduce(0) { $0 << 8 | Int($1) } }
        width = be(16); height = be(20)
    }
}

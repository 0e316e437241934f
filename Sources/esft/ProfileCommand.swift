import ESFTBase
import Foundation

enum ProfileCommand {
    static let help = """
    Usage: esft profile RUN_DIR [--no-pictures] [--python PYTHON] [--script FILE]

    Reads RUN_DIR/profile.json (written by esft train at the end of a run) and prints what the
    expert-parallel exchanges moved: bytes per step sent to other ranks per direction, the heaviest pair
    of ranks, the rows each rank received per layer (load imbalance = max ÷ mean), the dedup ratio (rows
    sent off-rank ÷ (token, expert) pairs routed off-rank), the analytic minimum bytes for the run's
    routing and placement (one row per (token, other rank owning one of its experts)) with measured ÷
    minimum, and the time split of a step per rank (compute, each collective, waiting).

    Then it writes PNG pictures into RUN_DIR/profile/ with scripts/profile_plots.py (python3 and
    matplotlib): a rank × rank heatmap of bytes per step (all layers, and per layer), bytes per layer and
    direction, rows received per rank per layer, and the time split of a step. Without python3 or
    matplotlib it prints the report and says the pictures were skipped.

    Options:
      --no-pictures    only the report
      --python PYTHON  the Python interpreter (default: python3 on PATH)
      --script FILE    the plotting script (default: scripts/profile_plots.py of the checkout esft was built in)
    """

    static func run(_ argv: [String]) throws {
        var args = Arguments(argv, command: "profile")
        if args.wantsHelp { print(help); return }
        let noPictures = args.flag("--no-pictures")
        let python = try args.option("--python") ?? "python3"
        let scriptPath = try args.option("--script")
        let runDir = URL(fileURLWithPath: try args.positional(1, names: "RUN_DIR")[0])
        try args.finish()
        let file = runDir.appendingPathComponent("profile.json")
        guard FileManager.default.fileExists(atPath: file.path) else {
            throw ESFTError("\(file.path): no profile (esft train writes it at the end of a finished run)")
        }
        let profile = try RunProfileFile(JSONReader.load(file, what: "run profile"))
        print(ProfileReport(profile, runDir: runDir).text, terminator: "")
        if noPictures { return }
        print(try pictures(profile: file, into: runDir.appendingPathComponent("profile"), python: python, script: scriptPath))
    }

    /// Runs the plotting script; a missing interpreter, script or matplotlib is reported, not an error.
    static func pictures(profile: URL, into dir: URL, python: String, script: String?) throws -> String {
        guard let script = script.map({ URL(fileURLWithPath: $0) }) ?? defaultScript() else {
            return "pictures skipped: scripts/profile_plots.py not found next to this esft build (use --script FILE)"
        }
        guard FileManager.default.fileExists(atPath: script.path) else { throw ESFTError("--script \(script.path): no such file") }
        let probe = try runPython(python, ["-c", "import matplotlib"])
        guard probe.status == 0 else {
            return "pictures skipped: \(python) with matplotlib is not available (\(probe.output.split(separator: "\n").last ?? "not found")); python3 -m pip install matplotlib"
        }
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let r = try runPython(python, [script.path, profile.path, dir.path])
        guard r.status == 0 else { throw ESFTError("\(script.path) failed (exit \(r.status)):\n\(r.output)") }
        return r.output.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// scripts/profile_plots.py in the checkout this executable was built in (.build/<triple>/<config>/esft).
    static func defaultScript() -> URL? {
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        var dir = URL(fileURLWithPath: exe).deletingLastPathComponent()
        for _ in 0..<5 {
            let candidate = dir.appendingPathComponent("scripts/profile_plots.py")
            if FileManager.default.fileExists(atPath: candidate.path) { return candidate }
            dir.deleteLastPathComponent()
        }
        return nil
    }

    /// stdout and stderr together; status 127 when the interpreter cannot be started.
    static func runPython(_ python: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [python] + arguments
        let pipe = Pipe()
        process.standardOutput = pipe; process.standardError = pipe
        do { try process.run() } catch { return (127, "cannot start \(python): \(error.localizedDescription)") }
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }
}

/// profile.json, validated: every matrix R × R of non-negative integers, bytes = rows × row bytes.
struct RunProfileFile {
    static let directions = ["forward dispatch", "forward combine", "backward dispatch", "backward combine"]
    static func pass(_ direction: String) -> String { direction.hasPrefix("forward") ? "forward" : "backward" }

    struct Layer {
        let layer: Int
        let rows: [String: [[Int]]], bytes: [String: [[Int]]], minimumRows: [String: [[Int]]]
        let pairs: [Int], pairsOffRank: [Int], receivedRows: [Int]
        /// The rank of each routed expert in this layer (placements may differ per layer).
        let owners: [Int]
    }
    struct Time { let wall: Double, compute: Double, collectives: [String: Double], waiting: Double }

    let ranks: Int, steps: Int, firstStep: Int, tokensPerStep: Int
    /// --placement: contiguous, balanced or affinity.
    let placement: String
    let rowBytes: [String: Int]
    let layers: [Layer]
    let time: [Time]

    init(_ r: JSONReader) throws {
        guard try r.field("format").string() == "esft-profile" else { throw try r.field("format").fail("must be \"esft-profile\"") }
        guard try r.field("version").int() == 1 else { throw try r.field("version").fail("must be 1 (this esft reads version 1)") }
        func positive(_ key: String) throws -> Int {
            let f = try r.field(key), v = try f.int()
            guard v >= 1 else { throw f.fail("must be ≥ 1, got \(v)") }
            return v
        }
        ranks = try positive("ranks"); steps = try positive("steps"); firstStep = try positive("first_step")
        tokensPerStep = try positive("tokens_per_step")
        let ranks = self.ranks
        func counts(_ f: JSONReader, length: Int) throws -> [Int] {
            let items = try f.items()
            guard items.count == length else { throw f.fail("must list \(length) values (one per rank), got \(items.count)") }
            return try items.map { i in
                let v = try i.int()
                guard v >= 0 else { throw i.fail("must be ≥ 0, got \(v)") }
                return v
            }
        }
        func matrix(_ f: JSONReader) throws -> [[Int]] {
            let items = try f.items()
            guard items.count == ranks else { throw f.fail("must be \(ranks) × \(ranks) (one row per source rank), got \(items.count) rows") }
            return try items.map { try counts($0, length: ranks) }
        }
        placement = try r.field("placement").string()
        let experts = try r.field("routed_experts").int()
        let rb = try r.field("row_bytes")
        rowBytes = try Dictionary(uniqueKeysWithValues: Self.directions.map { d in
            let f = try rb.field(d), v = try f.int()
            guard v >= 1 else { throw f.fail("must be ≥ 1, got \(v)") }
            return (d, v)
        })
        let rowBytes = self.rowBytes
        layers = try r.field("layers").items().map { l in
            var rows: [String: [[Int]]] = [:], bytes: [String: [[Int]]] = [:], minimum: [String: [[Int]]] = [:]
            for d in Self.directions {
                rows[d] = try matrix(l.field("rows").field(d))
                let b = try l.field("bytes").field(d)
                bytes[d] = try matrix(b)
                // `!`: each was set just above (rows, bytes) or read for every direction (rowBytes).
                for s in 0..<ranks { for t in 0..<ranks where bytes[d]![s][t] != rows[d]![s][t] * rowBytes[d]! {
                    throw b.fail("[\(s)][\(t)] is \(bytes[d]![s][t]), but \(rows[d]![s][t]) rows of \(rowBytes[d]!) bytes make \(rows[d]![s][t] * rowBytes[d]!)")
                } }
            }
            for p in ["forward", "backward"] { minimum[p] = try matrix(l.field("minimum_rows").field(p)) }
            let ownersField = try l.field("owners")
            let owners = try ownersField.items().map { i in
                let v = try i.int()
                guard (0..<ranks).contains(v) else { throw i.fail("must be a rank in 0..<\(ranks), got \(v)") }
                return v
            }
            guard owners.count == experts else {
                throw ownersField.fail("must give an owner for each of the \(experts) routed experts, got \(owners.count)")
            }
            return Layer(layer: try l.field("layer").int(), rows: rows, bytes: bytes, minimumRows: minimum,
                         pairs: try counts(l.field("token_expert_pairs"), length: ranks),
                         pairsOffRank: try counts(l.field("pairs_off_rank"), length: ranks),
                         receivedRows: try counts(l.field("received_rows"), length: ranks), owners: owners)
        }
        let times = try r.field("time").items()
        guard times.count == ranks else { throw try r.field("time").fail("must have one entry per rank (\(ranks)), got \(times.count)") }
        time = try times.map { t in
            let c = try t.field("collective_seconds")
            return Time(wall: try t.field("wall_seconds").double(), compute: try t.field("compute_seconds").double(),
                        collectives: try Dictionary(uniqueKeysWithValues: c.keys().map { ($0, try c.field($0).double()) }),
                        waiting: try t.field("waiting_seconds").double())
        }
    }
}

import ESFTData
import ESFTKernels
import ESFTMethod
import ESFTTestSupport
import Foundation
import XCTest

/// Builds tiny models and token datasets, runs `esft score` with or without mpirun, reads the scores.
enum ScoreFixtures {
    static let repoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()

    /// `esft init CONFIG DIR --seed S` (configs/tiny.json by default).
    static func initModel(in dir: URL, name: String = "model", config: URL? = nil, seed: Int = 11) throws -> URL {
        let out = dir.appendingPathComponent(name)
        let cfg = config ?? repoRoot.appendingPathComponent("configs/tiny.json")
        let r = try Executables.run(Executables.esft, ["init", cfg.path, out.path, "--seed", "\(seed)"])
        guard r.status == 0 else { throw ESFTError("esft init failed: \(r.stderr)") }
        return out
    }

    static func writeDataset(to url: URL, rows: Int, seqLen: Int = 48, tokenRange: Range<Int32>, seed: UInt64,
                             vocabSize: Int = 259, validationEvery: Int = 5) throws {
        try TokenDatasets.writeRandom(to: url, rows: rows, seqLen: seqLen, tokenRange: tokenRange, seed: seed,
                                      vocabSize: vocabSize, validationEvery: validationEvery)
    }

    struct Run {
        let status: Int32, stdout: String, stderr: String
        var output: String { "--- stdout ---\n\(stdout)\n--- stderr ---\n\(stderr)" }
    }

    /// `esft score ARGS`, directly (ranks nil) or under mpirun with that many ranks.
    static func esft(_ args: [String], ranks: Int? = nil) throws -> Run {
        if let ranks {
            let r = try MPIRun.run(ranks: ranks, arguments: args, timeout: 300)
            XCTAssertFalse(r.timedOut, "mpirun -n \(ranks) esft \(args) hung")
            return Run(status: r.status, stdout: r.stdout, stderr: r.stderr)
        }
        let r = try Executables.run(Executables.esft, args)
        return Run(status: r.status, stdout: r.stdout, stderr: r.stderr)
    }

    /// Experts of one layer in descending score (ties: lower id first), the order selection uses.
    static func ranking(_ scores: [Double]) -> [Int] {
        scores.indices.sorted { scores[$0] != scores[$1] ? scores[$0] > scores[$1] : $0 < $1 }
    }

    /// Mean over layers of |top-k(a) ∩ top-k(b)| / k for the gate scores.
    static func topOverlap(_ a: RelevanceScores, _ b: RelevanceScores, k: Int) -> Double {
        let layers = a.metadata.layers
        let total = layers.reduce(0.0) { sum, l in
            let x = Set(ranking(a.gate[l]!).prefix(k)), y = Set(ranking(b.gate[l]!).prefix(k))
            return sum + Double(x.intersection(y).count) / Double(k)
        }
        return total / Double(layers.count)
    }

    /// Largest |a − b| / max(|a|, |b|) over every gate and token score (0 where both are 0).
    static func maxRelativeDifference(_ a: RelevanceScores, _ b: RelevanceScores) -> Double {
        var worst = 0.0
        for l in a.metadata.layers {
            for (x, y) in zip(a.gate[l]! + a.token[l]!, b.gate[l]! + b.token[l]!) {
                let scale = max(abs(x), abs(y))
                if scale > 0 { worst = max(worst, abs(x - y) / scale) }
            }
        }
        return worst
    }

    static func files(in dir: URL) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []).sorted()
    }
}

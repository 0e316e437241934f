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

    /// A dataset of `rows` rows of `seqLen` tokens drawn uniformly from `tokenRange`; each row holds 2–4
    /// back-to-back samples followed by padding; every fifth row is validation.
    static func writeDataset(to url: URL, rows: Int, seqLen: Int = 48, tokenRange: Range<Int32>, seed: UInt64,
                             vocabSize: Int = 259, validationEvery: Int = 5) throws {
        var rng = SplitMix64(seed: seed)
        func uniform(_ n: Int) -> Int { Int(rng.next() % UInt64(n)) }
        var ids: [Int32] = [], labels: [Int32] = [], split: [UInt8] = [], samples: [TokenDataset.Sample] = []
        let pad: Int32 = 258
        for r in 0..<rows {
            var row: [Int32] = []
            for _ in 0..<(2 + uniform(3)) {
                let length = 4 + uniform(seqLen / 4 - 3)
                guard row.count + length <= seqLen else { break }
                samples.append(TokenDataset.Sample(row: r, start: row.count, length: length, source: 0))
                for _ in 0..<length { row.append(tokenRange.lowerBound + Int32(uniform(tokenRange.count))) }
            }
            let used = row.count
            row += [Int32](repeating: pad, count: seqLen - used)
            ids += row
            labels += row.enumerated().map { $0.offset < used ? $0.element : -100 }
            split.append(validationEvery > 0 && r % validationEvery == validationEvery - 1 ? 1 : 0)
        }
        let meta = TokenDataset.Metadata(seqLen: seqLen, vocabSize: vocabSize, padId: pad, bosId: 256, eosId: 257,
                                         tokenizer: "bytes", tokenizerFingerprint: "test", sourcesJSON: "{\"test\": \"\(seed)\"}",
                                         seed: Int64(seed))
        try TokenDataset.write(to: url, metadata: meta, inputIds: ids, labels: labels, split: split, samples: samples)
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

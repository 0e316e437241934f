import ESFTMethod
import ESFTTestSupport
import Foundation
import XCTest

/// `esft score --model`: same scores on 1–4 ranks, scores that tell data apart, clear failures.
final class ScoreTests: XCTestCase {
    var work: URL!

    override func setUpWithError() throws {
        work = try Fixtures.tempDirectory("esft-score")
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: work)
    }

    func scoreArgs(model: URL, data: URL, tokens: String, out: String, seed: Int = 5, threads: Int = 1, extra: [String] = []) -> [String] {
        ["score", "--model", model.path, "--data", data.path, "--tokens", tokens, "--seed", "\(seed)",
         "--threads", "\(threads)", "--out", work.appendingPathComponent(out).path] + extra
    }

    func load(_ name: String) throws -> RelevanceScores {
        try RelevanceScores.load(contentsOf: work.appendingPathComponent(name))
    }

    func testSameScoresOnOneToFourRanks() throws {
        if let why = MPIRun.unavailableReason { throw XCTSkip(why) }
        let model = try ScoreFixtures.initModel(in: work)
        let data = work.appendingPathComponent("data.h5")
        try ScoreFixtures.writeDataset(to: data, rows: 60, tokenRange: 0..<256, seed: 1)
        for normalize in ["samples", "tokens"] {
            let base = "r1-\(normalize).json"
            let one = try ScoreFixtures.esft(scoreArgs(model: model, data: data, tokens: "900", out: base,
                                                       extra: ["--batch-rows", "3", "--normalize", normalize]))
            XCTAssertEqual(one.status, 0, one.output)
            let reference = try load(base)
            XCTAssertEqual(reference.metadata.ranks, 1)
            XCTAssertGreaterThanOrEqual(reference.metadata.tokens, 900)
            for ranks in 2...4 {
                let name = "r\(ranks)-\(normalize).json"
                let r = try ScoreFixtures.esft(scoreArgs(model: model, data: data, tokens: "900", out: name,
                                                         extra: ["--batch-rows", "3", "--normalize", normalize]), ranks: ranks)
                XCTAssertEqual(r.status, 0, r.output)
                let got = try load(name)
                XCTAssertEqual(got.metadata.ranks, ranks)
                XCTAssertEqual(got.metadata.samples, reference.metadata.samples)
                XCTAssertEqual(got.metadata.tokens, reference.metadata.tokens)
                XCTAssertEqual(got.metadata.dataDigest, reference.metadata.dataDigest)
                XCTAssertEqual(got.metadata.modelFingerprint, reference.metadata.modelFingerprint)
                let diff = ScoreFixtures.maxRelativeDifference(got, reference)
                print("score equality: normalize \(normalize), \(ranks) ranks vs 1: max relative difference \(diff), \(got.metadata.samples) samples, \(got.metadata.tokens) tokens")
                XCTAssertLessThanOrEqual(diff, 1e-12)
                if normalize == "tokens" {
                    // Token selection ratios pooled over tokens are count / K / N: equal counts give equal bits.
                    XCTAssertEqual(got.token, reference.token, "selection counts differ on \(ranks) ranks")
                }
            }
        }
    }

    func testMoreRanksThanBatches() throws {
        if let why = MPIRun.unavailableReason { throw XCTSkip(why) }
        let model = try ScoreFixtures.initModel(in: work)
        let data = work.appendingPathComponent("data.h5")
        try ScoreFixtures.writeDataset(to: data, rows: 10, tokenRange: 0..<256, seed: 12)
        let extra = ["--batch-rows", "5"]   // 8 train rows → 2 batches; ranks 2 and 3 score nothing
        let one = try ScoreFixtures.esft(scoreArgs(model: model, data: data, tokens: "all", out: "one.json", extra: extra))
        XCTAssertEqual(one.status, 0, one.output)
        let four = try ScoreFixtures.esft(scoreArgs(model: model, data: data, tokens: "all", out: "four.json", extra: extra), ranks: 4)
        XCTAssertEqual(four.status, 0, four.output)
        let a = try load("one.json"), b = try load("four.json")
        XCTAssertEqual(a.gate, b.gate); XCTAssertEqual(a.token, b.token)
        XCTAssertEqual(a.metadata.tokens, b.metadata.tokens)
    }

    func testBatchSizeDoesNotChangeCounts() throws {
        let model = try ScoreFixtures.initModel(in: work)
        let data = work.appendingPathComponent("data.h5")
        try ScoreFixtures.writeDataset(to: data, rows: 12, tokenRange: 0..<256, seed: 2)
        for b in [1, 5] {
            let r = try ScoreFixtures.esft(scoreArgs(model: model, data: data, tokens: "all", out: "b\(b).json",
                                                     extra: ["--batch-rows", "\(b)", "--normalize", "tokens"]))
            XCTAssertEqual(r.status, 0, r.output)
        }
        let t2 = try ScoreFixtures.esft(scoreArgs(model: model, data: data, tokens: "all", out: "t2.json", threads: 2,
                                                  extra: ["--batch-rows", "5", "--normalize", "tokens"]))
        XCTAssertEqual(t2.status, 0, t2.output)
        print("score threads 1 vs 2 (batch rows 5): max relative difference \(ScoreFixtures.maxRelativeDifference(try load("b5.json"), try load("t2.json")))")
        let a = try load("b1.json"), b = try load("b5.json")
        XCTAssertEqual(a.metadata.tokens, b.metadata.tokens)
        let diff = ScoreFixtures.maxRelativeDifference(a, b)
        print("score batch rows 1 vs 5: max relative difference \(diff)")
        XCTAssertLessThan(diff, 1e-5)
    }

    func testScoresTellDatasetsApart() throws {
        let model = try ScoreFixtures.initModel(in: work)
        let low = work.appendingPathComponent("low.h5"), high = work.appendingPathComponent("high.h5")
        try ScoreFixtures.writeDataset(to: low, rows: 400, tokenRange: 32..<127, seed: 3)     // printable ASCII
        try ScoreFixtures.writeDataset(to: high, rows: 400, tokenRange: 160..<256, seed: 4)   // high bytes (UTF-8 CJK-like)
        let runs: [(String, URL, Int)] = [("low-s1.json", low, 1), ("low-s2.json", low, 2), ("high-s1.json", high, 1)]
        for (name, data, seed) in runs {
            let r = try ScoreFixtures.esft(scoreArgs(model: model, data: data, tokens: "4000", out: name, seed: seed))
            XCTAssertEqual(r.status, 0, r.output)
        }
        let a1 = try load("low-s1.json"), a2 = try load("low-s2.json"), b = try load("high-s1.json")
        for (name, s) in [("ASCII seed 1", a1), ("ASCII seed 2", a2), ("high bytes", b)] {
            for l in s.metadata.layers {
                let top = ScoreFixtures.ranking(s.gate[l]!).prefix(6).map { "\($0):" + String(format: "%.4f", s.gate[l]![$0]) }
                print("score ranking: \(name) layer \(l): \(top.joined(separator: " "))")
            }
        }
        // A freshly initialised router is nearly uniform (scores ≈ 1/16 · K/…); near-ties below the
        // top few experts decide top-4 membership, so top-2 is the sharper test. Deterministic seeds.
        var same: [Int: Double] = [:], other: [Int: Double] = [:]
        for k in [2, 4] {
            same[k] = ScoreFixtures.topOverlap(a1, a2, k: k); other[k] = ScoreFixtures.topOverlap(a1, b, k: k)
            print("score overlap: top-\(k) gate experts per layer, mean over \(a1.metadata.layers.count) layers: same data, seeds 1 and 2: \(same[k]!); ASCII vs high bytes: \(other[k]!)")
            XCTAssertLessThan(other[k]!, same[k]!)
        }
        XCTAssertGreaterThanOrEqual(same[2]!, 0.75)
        XCTAssertGreaterThanOrEqual(same[4]!, 0.5)
        XCTAssertLessThanOrEqual(other[2]!, 0.25)
    }

    // MARK: bad input

    func assertFails(_ args: [String], ranks: Int? = nil, _ fragments: String..., file: StaticString = #filePath, line: UInt = #line) throws {
        let before = ScoreFixtures.files(in: work)
        let r = try ScoreFixtures.esft(args, ranks: ranks)
        XCTAssertNotEqual(r.status, 0, r.output, file: file, line: line)
        for f in fragments { XCTAssertTrue(r.stderr.contains(f), "stderr lacks '\(f)': \(r.output)", file: file, line: line) }
        XCTAssertEqual(ScoreFixtures.files(in: work), before, "nothing written", file: file, line: line)
    }

    func testBadInputFailsClearlyAndWritesNothing() throws {
        let model = try ScoreFixtures.initModel(in: work)
        let data = work.appendingPathComponent("data.h5")
        try ScoreFixtures.writeDataset(to: data, rows: 4, tokenRange: 0..<256, seed: 5)
        let missing = work.appendingPathComponent("nope.h5")
        try assertFails(scoreArgs(model: model, data: missing, tokens: "10", out: "s.json"), "--data", "no such file")
        try assertFails(scoreArgs(model: model, data: data, tokens: "100000", out: "s.json"), "--tokens 100000 is more than", "--tokens all")
        try assertFails(scoreArgs(model: model, data: data, tokens: "0", out: "s.json"), "--tokens must be")
        try assertFails(["score", "--model", model.path, "--tokens", "10", "--out", "s.json"], "--data")

        let wide = work.appendingPathComponent("wide.h5")
        try ScoreFixtures.writeDataset(to: wide, rows: 3, tokenRange: 0..<256, seed: 6, vocabSize: 300)
        try assertFails(scoreArgs(model: model, data: wide, tokens: "10", out: "s.json"), "vocab_size 300 is larger than the model's 259")

        let empty = work.appendingPathComponent("empty.h5")
        try ScoreFixtures.writeDataset(to: empty, rows: 0, tokenRange: 0..<256, seed: 7)
        try assertFails(scoreArgs(model: model, data: empty, tokens: "all", out: "s.json"), "no tokens to score")
        let allValidation = work.appendingPathComponent("val.h5")
        try ScoreFixtures.writeDataset(to: allValidation, rows: 3, tokenRange: 0..<256, seed: 8, validationEvery: 1)
        try assertFails(scoreArgs(model: model, data: allValidation, tokens: "all", out: "s.json"), "no tokens to score")

        if MPIRun.unavailableReason == nil {
            try assertFails(scoreArgs(model: model, data: data, tokens: "100000", out: "s.json"), ranks: 2, "--tokens 100000 is more than")
            try assertFails(scoreArgs(model: model, data: wide, tokens: "10", out: "s.json"), ranks: 3, "rank", "vocab_size 300")
            try assertFails(scoreArgs(model: model, data: missing, tokens: "10", out: "s.json"), ranks: 2, "no such file")
        }
    }

    func testSelectRejectsScoresOfAnotherModel() throws {
        let model = try ScoreFixtures.initModel(in: work)
        let data = work.appendingPathComponent("data.h5")
        try ScoreFixtures.writeDataset(to: data, rows: 6, tokenRange: 0..<256, seed: 9)
        let r = try ScoreFixtures.esft(scoreArgs(model: model, data: data, tokens: "all", out: "s.json"))
        XCTAssertEqual(r.status, 0, r.output)
        let scores = work.appendingPathComponent("s.json").path

        // Selecting on the model that made the scores works.
        let ok = try ScoreFixtures.esft(["select", "--scores", scores, "--method", "gate", "--threshold", "0.3",
                                         "--model", model.path, "--out", work.appendingPathComponent("experts.json").path])
        XCTAssertEqual(ok.status, 0, ok.output)

        // Another model: tiny with one more layer (a different fingerprint, same layer shapes).
        let text = try String(contentsOf: ScoreFixtures.repoRoot.appendingPathComponent("configs/tiny.json"), encoding: .utf8)
        let otherConfig = work.appendingPathComponent("other.json")
        try text.replacingOccurrences(of: "\"num_hidden_layers\": 3", with: "\"num_hidden_layers\": 4")
            .write(to: otherConfig, atomically: true, encoding: .utf8)
        let other = try ScoreFixtures.initModel(in: work, name: "other", config: otherConfig)
        try assertFails(["select", "--scores", scores, "--method", "gate", "--threshold", "0.3", "--model", other.path,
                         "--out", work.appendingPathComponent("experts2.json").path], "fingerprint")
        try assertFails(["select", "--scores", scores, "--method", "gate", "--threshold", "1.5", "--model", model.path,
                         "--out", work.appendingPathComponent("experts3.json").path], "threshold")
    }
}

/// Writes a dataset for measuring throughput (docs/scoring.md) when ESFT_SCORE_BENCH_DATA names a path:
/// 96 rows of 512 byte tokens, 2–4 samples of 4–130 tokens per row. Skipped otherwise.
final class ScoreBenchmarkData: XCTestCase {
    func testWriteBenchmarkDataset() throws {
        guard let path = ProcessInfo.processInfo.environment["ESFT_SCORE_BENCH_DATA"] else {
            throw XCTSkip("set ESFT_SCORE_BENCH_DATA=FILE.h5 to write the throughput dataset")
        }
        try ScoreFixtures.writeDataset(to: URL(fileURLWithPath: path), rows: 96, seqLen: 512, tokenRange: 0..<256, seed: 42)
    }
}

import ESFTBase
import ESFTData
import ESFTMethod
import ESFTTestSupport
import Foundation
import XCTest

/// `esft score --score-per-sample`: the reference's choice of samples (checked against CPython running the
/// reference's loop), each sample scored alone, the same scores on 1 and 3 ranks.
final class PerSampleScoringTests: XCTestCase {
    var work: URL!
    override func setUpWithError() throws { work = try Fixtures.tempDirectory("esft-score-sample") }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: work) }

    /// get_expert_scores.py's loop, run by python3: random.seed(S); random.shuffle(dataset); rank r takes
    /// dataset[r::W] until its tokens reach n // W. The chosen indices must be ours, in the same order.
    func testChoiceIsTheReferenceLoop() throws {
        var rng = SplitMix64(seed: 9)
        let lengths = (0..<500).map { _ in 20 + Int(rng.next() % 300) }
        let samples = lengths.enumerated().map { TokenDataset.Sample(row: $0.offset, start: 0, length: $0.element, source: 0) }
        let script = """
        import json, random, sys
        lengths, cases = json.loads(sys.argv[1]), json.loads(sys.argv[2])
        out = []
        for seed, n, w in cases:
            random.seed(seed)
            dataset = list(range(len(lengths)))
            random.shuffle(dataset)
            chosen = []
            for rank in range(w):
                done = 0
                for i in dataset[rank::w]:
                    chosen.append(i)
                    done += lengths[i]
                    if done >= n // w:
                        break
            out.append(chosen)
        print(json.dumps(out))
        """
        // Budgets: most of the data (some ranks run out), the shipped logs' ~8k, small, and below W.
        let cases: [(UInt64, Int, Int)] = [(5_934_875, 80_000, 4), (5_934_875, 8192, 4), (7, 1000, 3), (5_934_875, 5, 8)]
        let json = { (o: Any) in String(decoding: try! JSONSerialization.data(withJSONObject: o), as: UTF8.self) }
        let r = try Executables.run(URL(fileURLWithPath: "/usr/bin/env"),
                                    ["python3", "-c", script, json(lengths), json(cases.map { [$0.0, $0.1, $0.2] })])
        guard r.status == 0 else { throw XCTSkip("python3 is not available: \(r.stderr.suffix(200))") }
        let expected = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [[Int]])
        for (c, want) in zip(cases, expected) {
            let plan = try SampleScoringPlan(samples: samples, tokens: c.1, seed: c.0, referenceRanks: c.2, source: "test")
            XCTAssertEqual(plan.chosenSamples, want, "seed \(c.0), \(c.1) tokens, \(c.2) reference processes")
        }
    }

    /// Rows holding one sample each (at position 0, padding after): scoring every sample alone must give the
    /// scores of scoring the rows (causal attention: padding after a sample cannot change its routing). Only
    /// GEMM blocking differs (batch of 1 row of L tokens vs 4 rows of T): the 1e-5 bound of
    /// ScoreTests.testBatchSizeDoesNotChangeCounts. Packed rows (several samples per row) must differ, and
    /// 3 ranks must give the 1-rank scores exactly (each sample is the same forward pass on any rank count).
    func testEachSampleAloneIsItsOwnRow() throws {
        let model = try ScoreFixtures.initModel(in: work)
        let single = work.appendingPathComponent("single.h5"), packed = work.appendingPathComponent("packed.h5")
        try writeDataset(single, samplesPerRow: 1)
        try writeDataset(packed, samplesPerRow: 3)
        func score(_ data: URL, _ out: String, _ extra: [String], ranks: Int? = nil) throws -> RelevanceScores {
            let r = try ScoreFixtures.esft(["score", "--model", model.path, "--data", data.path, "--tokens", "all", "--threads", "1",
                                            "--out", work.appendingPathComponent(out).path] + extra, ranks: ranks)
            XCTAssertEqual(r.status, 0, r.output)
            return try RelevanceScores.load(contentsOf: work.appendingPathComponent(out))
        }
        let rows = try score(single, "rows.json", [])
        let alone = try score(single, "alone.json", ["--score-per-sample"])
        XCTAssertEqual(rows.metadata.tokens, alone.metadata.tokens)
        XCTAssertLessThan(ScoreFixtures.maxRelativeDifference(rows, alone), 1e-5)

        let packedRows = try score(packed, "packed-rows.json", [])
        let packedAlone = try score(packed, "packed-alone.json", ["--score-per-sample"])
        XCTAssertEqual(packedRows.metadata.tokens, packedAlone.metadata.tokens)
        XCTAssertGreaterThan(ScoreFixtures.maxRelativeDifference(packedRows, packedAlone), 1e-3,
                             "with neighbours in the row, context changes routing: alone must differ")
        if MPIRun.unavailableReason == nil {
            let three = try score(packed, "packed-alone-3.json", ["--score-per-sample"], ranks: 3)
            XCTAssertEqual(ScoreFixtures.maxRelativeDifference(three, packedAlone), 0, "3 ranks vs 1")
        }
    }

    /// Every row train (the reference reads the whole file; per-sample mode ignores the split anyway).
    func writeDataset(_ url: URL, samplesPerRow: Int, rows: Int = 12, seqLen: Int = 48) throws {
        var rng = SplitMix64(seed: 4)
        var ids: [Int32] = [], labels: [Int32] = [], samples: [TokenDataset.Sample] = []
        for r in 0..<rows {
            var row: [Int32] = []
            for _ in 0..<samplesPerRow {
                let length = 8 + Int(rng.next() % 6)
                samples.append(TokenDataset.Sample(row: r, start: row.count, length: length, source: 0))
                row.append(256)  // BOS
                for _ in 1..<length { row.append(Int32(rng.next() % 256)) }
            }
            let used = row.count
            row += [Int32](repeating: 258, count: seqLen - used)
            ids += row
            labels += row.enumerated().map { $0.offset < used ? $0.element : -100 }
        }
        let meta = TokenDataset.Metadata(seqLen: seqLen, vocabSize: 259, padId: 258, bosId: 256, eosId: 257, tokenizer: "bytes",
                                         tokenizerFingerprint: "test", sourcesJSON: "{}", seed: 0)
        try TokenDataset.write(to: url, metadata: meta, inputIds: ids, labels: labels, split: [UInt8](repeating: 0, count: rows),
                               samples: samples)
    }
}

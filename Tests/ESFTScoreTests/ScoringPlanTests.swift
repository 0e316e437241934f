import ESFTData
import ESFTKernels
import ESFTMethod
import ESFTModel
import ESFTStore
import ESFTTestSupport
import Foundation
import XCTest

/// The sampling plan (which samples, rows and batches) and the layers-only forward scoring uses.
final class ScoringPlanTests: XCTestCase {
    typealias Sample = TokenDataset.Sample

    // Rows 0–3 of 10 tokens; row 2 is validation; row 3 holds an empty sample.
    let samples = [Sample(row: 0, start: 0, length: 4, source: 0), Sample(row: 0, start: 5, length: 3, source: 0),
                   Sample(row: 1, start: 0, length: 10, source: 0), Sample(row: 2, start: 0, length: 6, source: 0),
                   Sample(row: 3, start: 2, length: 5, source: 0), Sample(row: 3, start: 8, length: 0, source: 0)]
    let split: [UInt8] = [0, 0, 1, 0]

    func plan(tokens: Int?, seed: UInt64 = 1, batchRows: Int = 2) throws -> ScoringPlan {
        try ScoringPlan(samples: samples, split: split, seqLen: 10, tokens: tokens, seed: seed, batchRows: batchRows, source: "test")
    }

    func testAllTakesEveryTrainSample() throws {
        let p = try plan(tokens: nil)
        XCTAssertEqual(Set(p.chosenSamples), [0, 1, 2, 4])
        XCTAssertEqual(p.countedTokens, 22)
        XCTAssertEqual(p.rows, [0, 1, 3])
        XCTAssertEqual(p.batchCount, 2)
        // Batch 0 = rows 0 and 1: samples at 0..<4, 5..<8 of row 0 and all of row 1; position 4, 8, 9 do not count.
        let g = try p.grouping(ofBatch: 0)
        XCTAssertEqual(g.tokens, 20); XCTAssertEqual(g.countedTokens, 17); XCTAssertEqual(g.samples, 3)
    }

    func testBudgetStopsAtTheSampleThatCrossesIt() throws {
        for seed in UInt64(0)..<20 {
            let p = try plan(tokens: 5, seed: seed)
            XCTAssertGreaterThanOrEqual(p.countedTokens, 5)
            let withoutLast = p.countedTokens - samples[p.chosenSamples.last!].length
            XCTAssertLessThan(withoutLast, 5, "seed \(seed): took a sample after reaching the budget")
            XCTAssertEqual(try plan(tokens: 5, seed: seed).chosenSamples, p.chosenSamples, "same seed, same samples")
        }
        XCTAssertThrowsError(try plan(tokens: 23)) { XCTAssertTrue("\($0)".contains("more than the 22 tokens")) }
    }

    func testRankSharesCoverEveryBatchOnce() throws {
        let p = try ScoringPlan(samples: (0..<11).map { Sample(row: $0, start: 0, length: 3, source: 0) },
                                split: [UInt8](repeating: 0, count: 11), seqLen: 4, tokens: nil, seed: 3, batchRows: 2, source: "test")
        XCTAssertEqual(p.batchCount, 6)
        for ranks in 1...8 {
            let shares = (0..<ranks).map { p.batches(rank: $0, ranks: ranks) }
            XCTAssertEqual(shares.flatMap { Array($0) }, Array(0..<6), "\(ranks) ranks")
        }
    }

    func testOverlappingSamplesAreRejected() {
        let bad = [Sample(row: 0, start: 0, length: 5, source: 0), Sample(row: 0, start: 4, length: 2, source: 0)]
        XCTAssertThrowsError(try ScoringPlan(samples: bad, split: [0], seqLen: 8, tokens: nil, seed: 0, batchRows: 1, source: "t")) {
            XCTAssertTrue("\($0)".contains("overlap"))
        }
    }

    /// `forwardRouting` (layers only) routes exactly as `forward` does.
    func testLayersOnlyForwardRoutesLikeForward() throws {
        let work = try Fixtures.tempDirectory("esft-score-plan")
        defer { try? FileManager.default.removeItem(at: work) }
        let loaded = try LoadedModel.open(try ScoreFixtures.initModel(in: work))
        let model = try MoETransformer(config: loaded.config, parameters: loaded.parameters)
        var rng = SplitMix64(seed: 9)
        let ids = (0..<(3 * 16)).map { _ in Int32(rng.next() % 256) }
        let batch = TokenBatch(batch: 3, seqLen: 16, inputIds: ids, labels: ids)
        func routing(_ run: () throws -> Void) rethrows -> [[Float]] {
            var seen: [[Float]] = []
            model.routingObserver = { v in
                seen.append(Array(UnsafeBufferPointer(start: v.topkGate, count: v.tokens * v.k))
                            + UnsafeBufferPointer(start: v.topkIdx, count: v.tokens * v.k).map { Float($0) })
            }
            try run()
            return seen
        }
        let full = try routing { _ = try model.forward(batch, training: false) }
        let layersOnly = try routing { try model.forwardRouting(batch) }
        XCTAssertEqual(full.count, loaded.config.moeLayers.count)
        XCTAssertEqual(full, layersOnly)
    }
}

import ESFTData
import XCTest

final class SamplerTests: XCTestCase {
    let rows = Array(0..<23)

    func testRankSharesAreDisjointAndCoverTheBatch() {
        var sampler = Sampler(rows: rows, seed: 5)
        for _ in 0..<5 {
            let batch = sampler.nextBatch(7)
            for ranks in 1...4 {
                let shares = (0..<ranks).map { Sampler.share(of: batch, rank: $0, ranks: ranks) }
                XCTAssertEqual(shares.flatMap { Array($0) }, batch, "shares in rank order are the batch")
                XCTAssertEqual(shares.map(\.count).max()! - shares.map(\.count).min()!, batch.count % ranks == 0 ? 0 : 1)
            }
        }
    }

    func testGlobalOrderDoesNotDependOnRanks() {
        // What R ranks read, step by step, concatenated in rank order, is what one rank reads.
        var single = Sampler(rows: rows, seed: 9)
        let expected = (0..<10).map { _ in single.nextBatch(6) }
        for ranks in 1...4 {
            var samplers = (0..<ranks).map { _ in Sampler(rows: rows, seed: 9) }
            for step in 0..<10 {
                var seen = [Int]()
                for r in 0..<ranks { seen += Sampler.share(of: samplers[r].nextBatch(6), rank: r, ranks: ranks) }
                XCTAssertEqual(seen, expected[step], "R=\(ranks) step \(step)")
            }
        }
    }

    func testCursorResumesExactly() throws {
        var a = Sampler(rows: rows, seed: 3)
        for _ in 0..<6 { _ = a.nextBatch(5) }
        let saved = try JSONDecoder().decode(Sampler.Cursor.self, from: JSONEncoder().encode(a.cursor))
        var b = Sampler(rows: rows, seed: 3, cursor: saved)
        for _ in 0..<8 { XCTAssertEqual(a.nextBatch(5), b.nextBatch(5)) }
        XCTAssertEqual(a, b)
    }

    func testEpochsArePermutationsAndReshuffle() {
        let s = Sampler(rows: rows, seed: 1)
        XCTAssertEqual(s.order(epoch: 0).sorted(), rows)
        XCTAssertEqual(s.order(epoch: 1).sorted(), rows)
        XCTAssertNotEqual(s.order(epoch: 0), s.order(epoch: 1))
        XCTAssertNotEqual(s.order(epoch: 0), Sampler(rows: rows, seed: 2).order(epoch: 0))
        var t = s
        let batch = t.nextBatch(30)  // crosses into epoch 1
        XCTAssertEqual(batch, s.order(epoch: 0) + s.order(epoch: 1).prefix(7))
        XCTAssertEqual(t.cursor, Sampler.Cursor(epoch: 1, position: 7))
    }
}

import ESFTBase
import XCTest

/// RangeSplit replaced four hand-written splits; these are those formulas as they stood, and every
/// call must give exactly what they gave.
final class RangeSplitTests: XCTestCase {
    /// ExpertPlacement.split (also ModelDirectoryLayout.split): lengths accumulated block by block.
    private func oldExpertPlacementSplit(_ items: Int, into parts: Int) -> [Range<Int>] {
        let base = items / parts, extra = items % parts
        var ranges: [Range<Int>] = [], start = 0
        for p in 0..<parts {
            let len = base + (p < extra ? 1 : 0)
            ranges.append(start..<(start + len)); start += len
        }
        return ranges
    }

    /// Sampler.share: the start in closed form, as a range of batch positions.
    private func oldSamplerShare(count: Int, rank: Int, ranks: Int) -> Range<Int> {
        let base = count / ranks, extra = count % ranks
        let start = rank * base + min(rank, extra), len = base + (rank < extra ? 1 : 0)
        return start..<(start + len)
    }

    /// ScoringPlan.batches(rank:ranks:).
    private func oldScoringPlanBatches(batchCount: Int, rank: Int, ranks: Int) -> Range<Int> {
        let base = batchCount / ranks, extra = batchCount % ranks
        let start = rank * base + min(rank, extra)
        return start..<(start + base + (rank < extra ? 1 : 0))
    }

    func testEqualsTheFormulasItReplacedIncludingMoreBlocksThanItemsAndNothing() {
        var pairs = 0
        for count in 1...40 {
            for total in 0...130 {
                let blocks = RangeSplit.contiguousBlocks(count: count, total: total)
                XCTAssertEqual(blocks, oldExpertPlacementSplit(total, into: count), "count \(count) total \(total)")
                for index in 0..<count {
                    let block = RangeSplit.contiguousBlock(index: index, count: count, total: total)
                    XCTAssertEqual(block, blocks[index])
                    XCTAssertEqual(block, oldSamplerShare(count: total, rank: index, ranks: count))
                    XCTAssertEqual(block, oldScoringPlanBatches(batchCount: total, rank: index, ranks: count))
                }
                pairs += 1
            }
        }
        XCTAssertEqual(pairs, 40 * 131)
    }

    func testBlocksCoverTheRangeOnceWithTheLongerOnesFirst() {
        let blocks = RangeSplit.contiguousBlocks(count: 4, total: 10)
        XCTAssertEqual(blocks, [0..<3, 3..<6, 6..<8, 8..<10])
        XCTAssertEqual(RangeSplit.contiguousBlocks(count: 5, total: 3), [0..<1, 1..<2, 2..<3, 3..<3, 3..<3])
        XCTAssertEqual(RangeSplit.contiguousBlocks(count: 3, total: 0), [0..<0, 0..<0, 0..<0])
        XCTAssertEqual(RangeSplit.contiguousBlocks(count: 1, total: 7), [0..<7])
    }
}

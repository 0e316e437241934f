import ESFTBase

/// Deterministic, shardable order over a dataset's rows: epoch e visits the rows in a permutation
/// seeded by (seed, e); a step takes the next `globalBatch` positions; rank r of R reads a contiguous
/// share of them. The global order does not depend on R, so R ranks together see what one rank sees.
public struct Sampler: Equatable, Sendable {
    /// Where the next step starts: a checkpoint stores it and resumes exactly.
    public struct Cursor: Codable, Equatable, Sendable {
        public var epoch: Int
        public var position: Int
        public init(epoch: Int = 0, position: Int = 0) { self.epoch = epoch; self.position = position }
    }

    public let rows: [Int]
    public let seed: UInt64
    public private(set) var cursor: Cursor

    public init(rows: [Int], seed: UInt64, cursor: Cursor = Cursor()) {
        self.rows = rows; self.seed = seed; self.cursor = cursor
    }

    /// The rows of epoch `epoch` in visiting order (Fisher–Yates with a stream per epoch).
    public func order(epoch: Int) -> [Int] {
        var order = rows
        var rng = SplitMix64.stream(seed: seed, index: UInt64(epoch))
        if order.count > 1 {
            for i in stride(from: order.count - 1, to: 0, by: -1) {
                let j = Int(rng.next() % UInt64(i + 1))
                order.swapAt(i, j)
            }
        }
        return order
    }

    /// The next global batch (crossing into the next epoch when one ends), advancing the cursor.
    public mutating func nextBatch(_ globalBatch: Int) -> [Int] {
        // Invariant: train refuses a dataset without training rows and --batch-rows < 1 (TrainInputs, options).
        precondition(!rows.isEmpty && globalBatch > 0)
        var batch: [Int] = []
        var order = self.order(epoch: cursor.epoch)
        while batch.count < globalBatch {
            if cursor.position == order.count {
                cursor = Cursor(epoch: cursor.epoch + 1, position: 0)
                order = self.order(epoch: cursor.epoch)
            }
            let take = min(globalBatch - batch.count, order.count - cursor.position)
            batch += order[cursor.position..<(cursor.position + take)]
            cursor.position += take
        }
        return batch
    }

    /// Rank r's contiguous share of a global batch (uneven shares when R does not divide it).
    public static func share(of batch: [Int], rank: Int, ranks: Int) -> ArraySlice<Int> {
        batch[RangeSplit.contiguousBlock(index: rank, count: ranks, total: batch.count)]
    }
}

/// The one way esft cuts 0..<total into `count` contiguous blocks: the first `total % count` blocks are
/// one longer. Experts over ranks, experts over shard files, batch rows over ranks and scoring batches
/// over ranks all use it, so a rank or a shard owns the same ids everywhere.
public enum RangeSplit {
    /// Block `index` of `count`. With more blocks than items the last `count - total` blocks are empty
    /// (at `total`); with `total == 0` every block is `0..<0`.
    public static func contiguousBlock(index: Int, count: Int, total: Int) -> Range<Int> {
        // Invariant: callers split over their rank count (≥ 1, index = a rank) and counts of things (≥ 0).
        precondition(count >= 1 && index >= 0 && index < count && total >= 0, "block \(index) of \(count) over \(total)")
        let base = total / count, extra = total % count
        let start = index * base + min(index, extra)
        return start..<(start + base + (index < extra ? 1 : 0))
    }

    /// All `count` blocks, in order; together they cover 0..<total exactly once.
    public static func contiguousBlocks(count: Int, total: Int) -> [Range<Int>] {
        (0..<count).map { contiguousBlock(index: $0, count: count, total: total) }
    }
}

import ESFTData
import ESFTKernels
import ESFTModel

extension TokenDataset {
    /// The engine's batch for some of the dataset's rows, in the order given. `labels: false` gives every
    /// position the ignore index (scoring needs routing only, no loss).
    /// Each row is read from the file as it is needed (a hyperslab of one row).
    func batch<Rows: Collection>(rows: Rows, labels: Bool = true) throws -> TokenBatch where Rows.Element == Int {
        let t = seqLen
        var ids: [Int32] = [], targets: [Int32] = []
        ids.reserveCapacity(rows.count * t); targets.reserveCapacity(rows.count * t)
        for r in rows {
            ids += try inputIds(rows: r..<(r + 1))
            if labels { targets += try self.labels(rows: r..<(r + 1)) }
        }
        if !labels { targets = [Int32](repeating: CrossEntropy.ignoreIndex, count: ids.count) }
        return TokenBatch(batch: rows.count, seqLen: t, inputIds: ids, labels: targets)
    }
}

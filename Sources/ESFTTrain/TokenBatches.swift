import ESFTData
import ESFTKernels
import ESFTModel

extension TokenDataset {
    /// The engine's batch for some of the dataset's rows, in the order given. `labels: false` gives every
    /// position the ignore index (scoring needs routing only, no loss).
    func batch<Rows: Collection>(rows: Rows, labels: Bool = true) -> TokenBatch where Rows.Element == Int {
        let t = seqLen
        var ids: [Int32] = [], targets: [Int32] = []
        ids.reserveCapacity(rows.count * t); targets.reserveCapacity(rows.count * t)
        for r in rows {
            ids += inputIds[(r * t)..<((r + 1) * t)]
            if labels { targets += self.labels[(r * t)..<((r + 1) * t)] }
        }
        if !labels { targets = [Int32](repeating: CrossEntropy.ignoreIndex, count: ids.count) }
        return TokenBatch(batch: rows.count, seqLen: t, inputIds: ids, labels: targets)
    }
}

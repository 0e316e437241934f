import ESFTData
import ESFTKernels
import Foundation

/// Small synthetic token datasets for tests (the byte tokenizer's vocabulary: PAD 258, BOS 256, EOS 257).
public enum TokenDatasets {
    /// A dataset of `rows` rows of `seqLen` tokens drawn uniformly from `tokenRange`; each row holds 2–4
    /// back-to-back samples followed by padding; every fifth row is validation. A `vocabSize` below the byte
    /// tokenizer's 259 puts PAD, BOS and EOS at its last three ids instead.
    public static func writeRandom(to url: URL, rows: Int, seqLen: Int = 48, tokenRange: Range<Int32>, seed: UInt64,
                             vocabSize: Int = 259, validationEvery: Int = 5) throws {
        let last = Int32(min(vocabSize, 259) - 1)
        var rng = SplitMix64(seed: seed)
        func uniform(_ n: Int) -> Int { Int(rng.next() % UInt64(n)) }
        var ids: [Int32] = [], labels: [Int32] = [], split: [UInt8] = [], samples: [TokenDataset.Sample] = []
        let pad: Int32 = last
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
        let meta = TokenDataset.Metadata(seqLen: seqLen, vocabSize: vocabSize, padId: pad, bosId: last - 2, eosId: last - 1,
                                         tokenizer: "bytes", tokenizerFingerprint: "test", sourcesJSON: "{\"test\": \"\(seed)\"}",
                                         seed: Int64(seed))
        try TokenDataset.write(to: url, metadata: meta, inputIds: ids, labels: labels, split: split, samples: samples)
    }

}

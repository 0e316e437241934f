import ESFTBase
import ESFTData

/// Which samples and rows a model-based scoring run covers, and how they are cut into forward batches.
///
/// Samples of train rows are shuffled with the seed (the `Sampler` permutation) and taken in that order
/// until their tokens reach the budget. The scored rows are the rows holding a chosen sample, in
/// ascending order; the model runs on whole rows so every token sees the context it has in training,
/// but only the chosen samples' tokens count. Batches are fixed runs of `batchRows` scored rows in that
/// global order, and ranks take contiguous runs of whole batches: a batch is then the same forward
/// pass on any rank count, which is what makes the reduced sums identical for 1...R ranks.
public struct ScoringPlan {
    /// Indices into the dataset's `samples`, in the order they were drawn.
    public let chosenSamples: [Int]
    /// Tokens of the chosen samples (what counts).
    public let countedTokens: Int
    /// Tokens of train samples available.
    public let availableTokens: Int
    /// Rows holding a chosen sample, ascending.
    public let rows: [Int]
    public let batchRows: Int
    public let seqLen: Int
    /// row → its chosen samples as (start, length), by start.
    private let spansOfRow: [Int: [(start: Int, length: Int)]]

    /// `tokens` nil means every train sample. Zero-length samples never count.
    public init(samples: [TokenDataset.Sample], split: [UInt8], seqLen: Int, tokens: Int?, seed: UInt64,
                batchRows: Int, source: String) throws {
        // Invariant: `esft score` parses --batch-rows with a minimum of 1.
        precondition(batchRows >= 1)
        let train = samples.indices.filter { samples[$0].length > 0 && split[samples[$0].row] == 0 }
        let available = train.reduce(0) { $0 + samples[$1].length }
        guard available > 0 else {
            throw ESFTError("\(source): no tokens to score: the dataset has no non-empty samples in train rows (\(samples.count) samples, \(split.count) rows)")
        }
        if let tokens {
            guard tokens >= 1 else { throw ESFTError("\(source): --tokens must be ≥ 1") }
            guard tokens <= available else {
                throw ESFTError("\(source): --tokens \(tokens) is more than the \(available) tokens in the dataset's \(train.count) train samples (use --tokens all to score them all)")
            }
        }
        let order = Sampler(rows: train, seed: seed).order(epoch: 0)
        var chosen: [Int] = [], counted = 0
        for s in order {
            if let tokens, counted >= tokens { break }
            chosen.append(s); counted += samples[s].length
        }
        var spans: [Int: [(start: Int, length: Int)]] = [:]
        for s in chosen { spans[samples[s].row, default: []].append((samples[s].start, samples[s].length)) }
        for (row, list) in spans {
            let sorted = list.sorted { $0.start < $1.start }
            for i in sorted.indices.dropFirst() where sorted[i].start < sorted[i - 1].start + sorted[i - 1].length {
                throw ESFTError("\(source): samples overlap in row \(row) (at positions \(sorted[i - 1].start) and \(sorted[i].start)); a token can belong to one sample only")
            }
            spans[row] = sorted
        }
        chosenSamples = chosen; countedTokens = counted; availableTokens = available
        rows = spans.keys.sorted(); spansOfRow = spans
        self.batchRows = batchRows; self.seqLen = seqLen
    }

    public var batchCount: Int { (rows.count + batchRows - 1) / batchRows }

    /// The scored rows of batch `b`.
    public func rows(ofBatch b: Int) -> ArraySlice<Int> {
        rows[(b * batchRows)..<min(rows.count, (b + 1) * batchRows)]
    }

    /// Rank r's contiguous run of batches (uneven when R does not divide the batch count; empty when
    /// there are more ranks than batches).
    public func batches(rank: Int, ranks: Int) -> Range<Int> {
        RangeSplit.contiguousBlock(index: rank, count: ranks, total: batchCount)
    }

    /// Which tokens of batch `b` count and to which sample each belongs (ids local to the batch).
    public func grouping(ofBatch b: Int) throws -> TokenGrouping {
        let batchRowList = rows(ofBatch: b)
        var sampleOfToken = [Int32](repeating: -1, count: batchRowList.count * seqLen)
        var next: Int32 = 0
        for (p, row) in batchRowList.enumerated() {
            for span in spansOfRow[row] ?? [] {
                let base = p * seqLen + span.start
                for t in base..<(base + span.length) { sampleOfToken[t] = next }
                next += 1
            }
        }
        return try TokenGrouping(sampleOfToken: sampleOfToken)
    }
}

import ESFTBase
import ESFTData

/// The ESFT reference's scoring sample (scripts/expert/get_expert_scores.py), for `esft score
/// --score-per-sample`: every sample of the file (train and validation rows alike: the reference reads the
/// whole training file) in the order of CPython's `random.seed(seed); random.shuffle(...)`; reference rank
/// r of W takes samples r, r+W, r+2W, ... until its own count reaches ⌊tokens / W⌋ (the sample that crosses
/// is kept). Each chosen sample then runs alone: one forward pass of its tokens, no packed neighbours.
///
/// W is the reference's process count, a property of the recipe, not of this job: the chosen set is the
/// same for any number of esft ranks, which split the chosen samples into contiguous runs.
public struct SampleScoringPlan {
    /// Indices into the dataset's `samples`, reference rank by reference rank.
    public let chosenSamples: [Int]
    public let countedTokens: Int
    public let availableTokens: Int
    public let referenceRanks: Int

    /// `tokens` nil: every sample.
    public init(samples: [TokenDataset.Sample], tokens: Int?, seed: UInt64, referenceRanks: Int, source: String) throws {
        // Invariant: `esft score` parses --reference-ranks with a minimum of 1.
        precondition(referenceRanks >= 1)
        let usable = samples.indices.filter { samples[$0].length > 0 }
        let available = usable.reduce(0) { $0 + samples[$1].length }
        guard available > 0 else { throw ESFTError("\(source): no tokens to score: the dataset has no non-empty samples") }
        if let tokens {
            guard tokens >= 1 else { throw ESFTError("\(source): --tokens must be ≥ 1") }
            guard tokens <= available else {
                throw ESFTError("\(source): --tokens \(tokens) is more than the \(available) tokens in the dataset's \(usable.count) samples (use --tokens all to score them all)")
            }
        }
        var order = usable
        var random = PythonRandom(seed: seed)
        random.shuffle(&order)
        var chosen: [Int] = []
        if let tokens {
            let budget = tokens / referenceRanks
            for r in 0..<referenceRanks {
                var done = 0
                for s in stride(from: r, to: order.count, by: referenceRanks).map({ order[$0] }) {
                    chosen.append(s); done += samples[s].length
                    if done >= budget { break }
                }
            }
        } else {
            chosen = order
        }
        chosenSamples = chosen
        countedTokens = chosen.reduce(0) { $0 + samples[$1].length }
        availableTokens = available
        self.referenceRanks = referenceRanks
    }

    /// esft rank r's contiguous run of chosen samples (each is one forward pass).
    public func passes(rank: Int, ranks: Int) -> Range<Int> {
        RangeSplit.contiguousBlock(index: rank, count: ranks, total: chosenSamples.count)
    }
}

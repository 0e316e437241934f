// Packing of tokenized samples into rows of exactly seqLen tokens, in the order given.
import ESFTBase

/// How a sample that does not fit the open row is handled.
public enum PackMode: String, Sendable, CaseIterable {
    /// esft's default: samples stay whole; the open row is padded and the sample starts a new one.
    case whole
    /// The ESFT reference's `get_examples_from_buffer_pad`: the sample is cut to its last tokens and fills
    /// the row, so only the final row is padded.
    case overflowCut = "overflow-cut"
}

public struct Packer {
    public let seqLen: Int
    public let padId: Int32, bosId: Int32
    public let mode: PackMode
    /// Probability of dropping the first token of a sample that is not the first of its row (reference:
    /// 0.2). `whole`: only a BOS is dropped, decided by SplitMix64. `overflowCut`: the first token of what
    /// is left after the cut, whatever it is, with one draw of Python's `random.random()` per sample added
    /// to a non-empty row, exactly as the reference draws them.
    public let dropBOS: Double
    private var rng: SplitMix64
    private var referenceRandom: PythonRandom

    public private(set) var inputIds: [Int32] = []
    public private(set) var labels: [Int32] = []
    public private(set) var samples: [TokenDataset.Sample] = []
    public private(set) var rows = 0
    public private(set) var truncated = 0
    public private(set) var droppedBOS = 0
    /// Tokens used in the open row (0: no open row).
    private var used = 0

    public init(seqLen: Int, padId: Int32, bosId: Int32, mode: PackMode = .whole, dropBOS: Double = 0, seed: UInt64 = 0) {
        // Invariant: --seq-len ≥ 1 is parsed by the command; dropBOS is 0 or the reference recipe's constant.
        precondition(seqLen > 0 && (0...1).contains(dropBOS))
        self.seqLen = seqLen; self.padId = padId; self.bosId = bosId; self.mode = mode; self.dropBOS = dropBOS
        rng = SplitMix64.stream(seed: seed, index: 1)
        referenceRandom = PythonRandom(seed: seed)
    }

    public mutating func add(ids: [Int32], labels sampleLabels: [Int32], source: Int) {
        switch mode {
        case .whole: addWhole(ids: ids, labels: sampleLabels, source: source)
        case .overflowCut: addOverflowCut(ids: ids, labels: sampleLabels, source: source)
        }
    }

    /// A sample that fits the open row's free space goes there; otherwise the row is padded and
    /// closed, and the sample starts a new one. A sample longer than seqLen keeps its last seqLen
    /// tokens (the answer and EOS survive; the reference also keeps the tail) in a row of its own.
    private mutating func addWhole(ids: [Int32], labels sampleLabels: [Int32], source: Int) {
        // Invariant: ChatFormat.tokenize gives every sample BOS and EOS at least, and one label per id.
        precondition(ids.count == sampleLabels.count && !ids.isEmpty)
        var ids = ids[...], sampleLabels = sampleLabels[...]
        if ids.count > seqLen {
            ids = ids.suffix(seqLen); sampleLabels = sampleLabels.suffix(seqLen)
            truncated += 1
        }
        if used > 0 && ids.count > seqLen - used { closeRow() }
        // The fit test above uses the full length: dropping BOS never decides where a sample goes.
        if used > 0 && dropBOS > 0 && ids.first == bosId && ids.count > 1 && rng.nextUnit() < dropBOS {
            ids = ids.dropFirst(); sampleLabels = sampleLabels.dropFirst()
            droppedBOS += 1
        }
        if used == 0 { rows += 1 }
        samples.append(TokenDataset.Sample(row: rows - 1, start: used, length: ids.count, source: source))
        inputIds += ids; labels += sampleLabels
        used += ids.count
        if used == seqLen { used = 0 }
    }

    /// The reference's order of operations: cut to the row's free space (keeping the tail), then, if the row
    /// already holds tokens, one draw decides whether the first token goes. A piece can end up empty (cut to
    /// one token, then dropped); it is not recorded as a sample.
    private mutating func addOverflowCut(ids: [Int32], labels sampleLabels: [Int32], source: Int) {
        // Invariant: ChatFormat.tokenize gives every sample BOS and EOS at least, and one label per id.
        precondition(ids.count == sampleLabels.count && !ids.isEmpty)
        var ids = ids[...], sampleLabels = sampleLabels[...]
        let free = seqLen - used
        if ids.count > free {
            ids = ids.suffix(free); sampleLabels = sampleLabels.suffix(free)
            truncated += 1
        }
        if used > 0 && referenceRandom.random() < dropBOS {
            ids = ids.dropFirst(); sampleLabels = sampleLabels.dropFirst()
            droppedBOS += 1
        }
        guard !ids.isEmpty else { return }
        if used == 0 { rows += 1 }
        samples.append(TokenDataset.Sample(row: rows - 1, start: used, length: ids.count, source: source))
        inputIds += ids; labels += sampleLabels
        used += ids.count
        if used == seqLen { used = 0 }
    }

    /// Pads the open row with PAD (label -100).
    public mutating func closeRow() {
        guard used > 0 else { return }
        let free = seqLen - used
        inputIds += repeatElement(padId, count: free)
        labels += repeatElement(-100, count: free)
        used = 0
    }

    /// Closes the last row and returns the packed rows.
    public mutating func finish() -> (inputIds: [Int32], labels: [Int32], samples: [TokenDataset.Sample], rows: Int) {
        closeRow()
        return (inputIds, labels, samples, rows)
    }
}

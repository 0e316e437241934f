import ESFTBase
import ESFTHDF5
import Foundation

/// Everything a token dataset must satisfy, checked once when it is opened, so a bad value is reported with
/// the file and the dataset at fault before a command writes anything (not mid-run, when a row is used).
enum TokenDatasetChecks {
    /// Shapes: the seq_len attribute against the arrays, and the arrays against each other.
    static func checkShapes(path: String, seqLen: Int, vocabSize: Int, ids: H5Dataset, labels: H5Dataset, split: H5Dataset,
                            samples: H5Dataset) throws {
        guard seqLen > 0 else { throw ESFTError(ErrorText.field(path, "seq_len", "attribute is \(seqLen); it must be positive")) }
        guard vocabSize > 0, vocabSize <= Int(Int32.max) else {
            throw ESFTError(ErrorText.field(path, "vocab_size", "attribute is \(vocabSize); it must be in 1...\(Int32.max) (ids are int32)"))
        }
        let shape = ids.shape
        guard shape.count == 2 else { throw ESFTError(ErrorText.field(path, "input_ids", "must be 2-D [rows, seq_len], got shape \(shape)")) }
        guard shape[1] == seqLen else {
            throw ESFTError(ErrorText.field(path, "seq_len", "the attribute says \(seqLen) tokens per row, but input_ids holds rows of \(shape[1]) (shape \(shape))"))
        }
        guard labels.shape == shape else {
            throw ESFTError(ErrorText.field(path, "labels", "must have the shape of input_ids \(shape), got \(labels.shape)"))
        }
        guard split.shape == [shape[0]] else { throw ESFTError(ErrorText.field(path, "split", "must be [\(shape[0])] (one value per row), got \(split.shape)")) }
        guard samples.shape.count == 2, samples.shape[1] == 4 else {
            throw ESFTError(ErrorText.field(path, "samples", "must be [S, 4] (row, start, length, source), got \(samples.shape)"))
        }
        if split.elementKind.isFloat { throw ESFTError(ErrorText.field(path, "split", "is stored as floats; it must be an integer dataset of 0 and 1")) }
        // Before anything is allocated for them: the shapes must be backed by the bytes the file holds.
        for (name, d) in [("input_ids", ids), ("labels", labels), ("split", split), ("samples", samples)] {
            if let problem = d.declaredSizeProblem { throw ESFTError(ErrorText.field(path, name, problem)) }
        }
    }

    /// Reads rows `rows` of an integer [rows, seq_len] dataset as int32; a float dataset is accepted only if
    /// every value is a whole number (a fractional id would otherwise be truncated silently by HDF5's conversion).
    static func readIntegers(_ d: H5Dataset, path: String, name: String, rows: Range<Int>, seqLen: Int) throws -> [Int32] {
        let count = rows.count * seqLen
        var values = [Int32](repeating: 0, count: count)
        guard count > 0 else { return values }
        if d.elementKind.isFloat {
            var floats = [Float](repeating: 0, count: count)
            try floats.withUnsafeMutableBytes { try d.readRows(rows.lowerBound, rows.count, into: $0.baseAddress!, element: .float32) }
            for (i, x) in floats.enumerated() {
                guard x.isFinite, x == x.rounded(), abs(x) < 2_147_483_648 else {
                    throw ESFTError(ErrorText.field(path, "\(name)[\(rows.lowerBound + i / seqLen)][\(i % seqLen)]", "is \(x), stored as a float; token ids must be whole numbers (store them as int32)"))
                }
                values[i] = Int32(x)
            }
            return values
        }
        try values.withUnsafeMutableBytes { try d.readRows(rows.lowerBound, rows.count, into: $0.baseAddress!, element: .int32) }
        return values
    }

    /// Input ids of rows starting at `firstRow`: within the vocabulary.
    static func checkInputIds(path: String, seqLen: Int, vocabSize: Int, _ ids: [Int32], firstRow: Int) throws {
        let v = Int32(vocabSize)
        if let bad = ids.firstIndex(where: { $0 < 0 || $0 >= v }) {
            throw ESFTError(ErrorText.field(path, "input_ids[\(firstRow + bad / seqLen)][\(bad % seqLen)]", "is \(ids[bad]), outside the vocabulary 0..<\(v) (vocab_size)"))
        }
    }

    /// Labels of rows starting at `firstRow`: within the vocabulary or -100.
    static func checkLabels(path: String, seqLen: Int, vocabSize: Int, _ labels: [Int32], firstRow: Int) throws {
        let v = Int32(vocabSize)
        if let bad = labels.firstIndex(where: { $0 != -100 && ($0 < 0 || $0 >= v) }) {
            throw ESFTError(ErrorText.field(path, "labels[\(firstRow + bad / seqLen)][\(bad % seqLen)]", "is \(labels[bad]); a label must be in 0..<\(v) (vocab_size) or -100 (not trained)"))
        }
    }

    /// Split 0 or 1, samples inside their rows.
    static func checkSplitAndSamples(path: String, seqLen: Int, split: [UInt8], samples: [TokenDataset.Sample]) throws {
        if let bad = split.firstIndex(where: { $0 > 1 }) {
            throw ESFTError(ErrorText.field(path, "split[\(bad)]", "is \(split[bad]); it must be 0 (train) or 1 (validation)"))
        }
        let rows = split.count
        for (i, s) in samples.enumerated() where s.row < 0 || s.row >= rows || s.start < 0 || s.length < 0 || s.start + s.length > seqLen {
            throw ESFTError(ErrorText.field(path, "samples[\(i)]", "(row \(s.row), start \(s.start), length \(s.length)) lies outside the \(rows) rows of \(seqLen) tokens"))
        }
    }
}

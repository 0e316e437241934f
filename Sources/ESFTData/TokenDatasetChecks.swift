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
    }

    /// Reads an integer dataset as int32; a float dataset is accepted only if every value is a whole number
    /// (a fractional id would otherwise be truncated silently by HDF5's conversion).
    static func readIntegers(_ d: H5Dataset, path: String, name: String, count: Int, seqLen: Int) throws -> [Int32] {
        var values = [Int32](repeating: 0, count: count)
        guard count > 0 else { return values }
        if d.elementKind.isFloat {
            var floats = [Float](repeating: 0, count: count)
            try floats.withUnsafeMutableBytes { try d.read(into: $0.baseAddress!, element: .float32) }
            for (i, x) in floats.enumerated() {
                guard x.isFinite, x == x.rounded(), abs(x) < 2_147_483_648 else {
                    throw ESFTError(ErrorText.field(path, "\(name)[\(i / seqLen)][\(i % seqLen)]", "is \(x), stored as a float; token ids must be whole numbers (store them as int32)"))
                }
                values[i] = Int32(x)
            }
            return values
        }
        try values.withUnsafeMutableBytes { try d.read(into: $0.baseAddress!, element: .int32) }
        return values
    }

    /// Values: ids within the vocabulary, labels within it or -100, split 0 or 1, samples inside their rows.
    static func checkValues(path: String, seqLen: Int, vocabSize: Int, inputIds: [Int32], labels: [Int32], split: [UInt8],
                            samples: [TokenDataset.Sample]) throws {
        let v = Int32(vocabSize)
        if let bad = inputIds.firstIndex(where: { $0 < 0 || $0 >= v }) {
            throw ESFTError(ErrorText.field(path, "input_ids[\(bad / seqLen)][\(bad % seqLen)]", "is \(inputIds[bad]), outside the vocabulary 0..<\(v) (vocab_size)"))
        }
        if let bad = labels.firstIndex(where: { $0 != -100 && ($0 < 0 || $0 >= v) }) {
            throw ESFTError(ErrorText.field(path, "labels[\(bad / seqLen)][\(bad % seqLen)]", "is \(labels[bad]); a label must be in 0..<\(v) (vocab_size) or -100 (not trained)"))
        }
        if let bad = split.firstIndex(where: { $0 > 1 }) {
            throw ESFTError(ErrorText.field(path, "split[\(bad)]", "is \(split[bad]); it must be 0 (train) or 1 (validation)"))
        }
        let rows = split.count
        for (i, s) in samples.enumerated() where s.row < 0 || s.row >= rows || s.start < 0 || s.length < 0 || s.start + s.length > seqLen {
            throw ESFTError(ErrorText.field(path, "samples[\(i)]", "(row \(s.row), start \(s.start), length \(s.length)) lies outside the \(rows) rows of \(seqLen) tokens"))
        }
    }
}

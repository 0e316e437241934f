import ESFTBase
import ESFTHDF5
import Foundation

/// A packed token dataset (docs/data.md): rows of exactly `seqLen` tokens with HF-convention labels
/// (-100 where not trained), a train/validation split per row, and where each packed sample sits.
///
/// HDF5 layout (`esft-tokens`, version 1): datasets `input_ids` int32 [rows, T], `labels` int32 [rows, T],
/// `split` uint8 [rows] (0 train, 1 validation), `samples` int64 [S, 4] (row, start, length, source);
/// root attributes esft_format, esft_format_version, seq_len, vocab_size, pad_id, bos_id, eos_id,
/// tokenizer, tokenizer_fingerprint, sources (JSON), seed.
public final class TokenDataset {
    public static let format = "esft-tokens"
    public static let version: Int64 = 1

    public struct Sample: Equatable, Sendable {
        public let row: Int, start: Int, length: Int, source: Int
        public init(row: Int, start: Int, length: Int, source: Int) {
            self.row = row; self.start = start; self.length = length; self.source = source
        }
    }

    public struct Metadata: Sendable {
        public var seqLen: Int
        public var vocabSize: Int
        public var padId: Int32, bosId: Int32, eosId: Int32
        public var tokenizer: String
        public var tokenizerFingerprint: String
        public var sourcesJSON: String
        public var seed: Int64
        public init(seqLen: Int, vocabSize: Int, padId: Int32, bosId: Int32, eosId: Int32, tokenizer: String,
                    tokenizerFingerprint: String, sourcesJSON: String, seed: Int64) {
            self.seqLen = seqLen; self.vocabSize = vocabSize; self.padId = padId; self.bosId = bosId; self.eosId = eosId
            self.tokenizer = tokenizer; self.tokenizerFingerprint = tokenizerFingerprint; self.sourcesJSON = sourcesJSON; self.seed = seed
        }
    }

    public let path: String
    public let metadata: Metadata
    public let rows: Int
    public let split: [UInt8]
    public let samples: [Sample]
    /// FNV-1a 64 over input_ids, labels, split and samples (native little-endian bytes): two files with
    /// the same digest hold the same training data, whatever their metadata. Checkpoints record it.
    public let digest: String

    /// The file stays open (each H5Dataset holds it): a batch reads its rows as hyperslabs, so a rank holds
    /// the rows it trains on, never the whole dataset (a DeepSeek-V2-Lite run's rows of 4096 tokens add up).
    private let idsData: H5Dataset, labelsData: H5Dataset

    public var seqLen: Int { metadata.seqLen }
    public var trainRows: [Int] { (0..<rows).filter { split[$0] == 0 } }
    public var validationRows: [Int] { (0..<rows).filter { split[$0] == 1 } }

    /// Rows per block when a whole dataset is checked and digested at open: 4 Mi tokens, 16 MiB per block.
    static func blockRows(seqLen: Int) -> Int { max(1, (4 << 20) / max(seqLen, 1)) }

    public init(path: String) throws {
        self.path = path
        let f = try H5File.openReadOnly(path)
        let a = f.attributes
        guard a.string("esft_format") == Self.format, let version = a.int("esft_format_version") else {
            throw ESFTError("\(path): not an esft token dataset (make one with `esft data prepare`)")
        }
        guard version <= Self.version else { throw ESFTError("\(path): token dataset version \(version) is newer than this esft reads (\(Self.version))") }
        func int(_ k: String) throws -> Int64 {
            guard let v = a.int(k) else { throw ESFTError("\(path): attribute '\(k)' is missing") }
            return v
        }
        func id(_ k: String) throws -> Int32 {
            let v = try int(k)
            guard let i = Int32(exactly: v) else { throw ESFTError(ErrorText.field(path, k, "attribute is \(v); token ids are int32")) }
            return i
        }
        metadata = Metadata(seqLen: Int(try int("seq_len")), vocabSize: Int(try int("vocab_size")), padId: try id("pad_id"),
                            bosId: try id("bos_id"), eosId: try id("eos_id"), tokenizer: a.string("tokenizer") ?? "",
                            tokenizerFingerprint: a.string("tokenizer_fingerprint") ?? "", sourcesJSON: a.string("sources") ?? "{}",
                            seed: a.int("seed") ?? 0)
        let ids = try f.dataset("input_ids"), lab = try f.dataset("labels"), sp = try f.dataset("split"), sm = try f.dataset("samples")
        try TokenDatasetChecks.checkShapes(path: path, seqLen: metadata.seqLen, vocabSize: metadata.vocabSize, ids: ids, labels: lab,
                                           split: sp, samples: sm)
        rows = ids.shape[0]
        let t = metadata.seqLen, v = metadata.vocabSize
        var split8 = [UInt8](repeating: 0, count: rows), samples64 = [Int64](repeating: 0, count: sm.shape[0] * 4)
        if rows > 0 { try split8.withUnsafeMutableBytes { try sp.read(into: $0.baseAddress!, element: .uint8) } }
        if !samples64.isEmpty { try samples64.withUnsafeMutableBytes { try sm.read(into: $0.baseAddress!, element: .int64) } }
        split = split8
        samples = stride(from: 0, to: samples64.count, by: 4).map {
            Sample(row: Int(samples64[$0]), start: Int(samples64[$0 + 1]), length: Int(samples64[$0 + 2]), source: Int(samples64[$0 + 3]))
        }
        // Every value is checked before any command writes, and digested, one block of rows at a time.
        var d = FNV1a64()
        let n = rows, step = Self.blockRows(seqLen: t)
        let blocks = stride(from: 0, to: n, by: step).map { $0..<min(n, $0 + step) }
        for block in blocks {
            let values = try TokenDatasetChecks.readIntegers(ids, path: path, name: "input_ids", rows: block, seqLen: t)
            try TokenDatasetChecks.checkInputIds(path: path, seqLen: t, vocabSize: v, values, firstRow: block.lowerBound)
            d.add(array: values)
        }
        for block in blocks {
            let values = try TokenDatasetChecks.readIntegers(lab, path: path, name: "labels", rows: block, seqLen: t)
            try TokenDatasetChecks.checkLabels(path: path, seqLen: t, vocabSize: v, values, firstRow: block.lowerBound)
            d.add(array: values)
        }
        try TokenDatasetChecks.checkSplitAndSamples(path: path, seqLen: t, split: split, samples: samples)
        d.add(array: split8); d.add(array: samples64)
        digest = d.hexDigest
        idsData = ids; labelsData = lab
    }

    /// input_ids of rows [rows.lowerBound, rows.upperBound), flattened [rows, seq_len] (values checked at open).
    public func inputIds(rows r: Range<Int>) throws -> [Int32] { try read(idsData, "input_ids", rows: r) }
    /// labels of those rows.
    public func labels(rows r: Range<Int>) throws -> [Int32] { try read(labelsData, "labels", rows: r) }
    /// Every row's input_ids (for small datasets and tests: training reads rows as it needs them).
    public func allInputIds() throws -> [Int32] { try inputIds(rows: 0..<rows) }
    public func allLabels() throws -> [Int32] { try labels(rows: 0..<rows) }

    private func read(_ d: H5Dataset, _ name: String, rows r: Range<Int>) throws -> [Int32] {
        // Invariant: row indices come from this dataset's own row count (sampler, scoring plan, eval).
        precondition(r.lowerBound >= 0 && r.upperBound <= rows, "rows \(r) outside 0..<\(rows)")
        return try TokenDatasetChecks.readIntegers(d, path: path, name: name, rows: r, seqLen: seqLen)
    }

    /// Writes a dataset atomically (temporary name, then rename).
    public static func write(to url: URL, metadata: Metadata, inputIds: [Int32], labels: [Int32], split: [UInt8],
                             samples: [Sample]) throws {
        let rows = split.count, t = metadata.seqLen
        // Invariant: the packer emits whole rows of seqLen tokens, one split mark per row.
        precondition(inputIds.count == rows * t && labels.count == rows * t)
        try AtomicWrite.create(url) { tmp in
            let f = try H5File.create(tmp.path, alignment: 64)
            let a = f.attributes
            try a.set("esft_format", format); try a.set("esft_format_version", version)
            try a.set("seq_len", Int64(t)); try a.set("vocab_size", Int64(metadata.vocabSize))
            try a.set("pad_id", Int64(metadata.padId)); try a.set("bos_id", Int64(metadata.bosId)); try a.set("eos_id", Int64(metadata.eosId))
            try a.set("tokenizer", metadata.tokenizer); try a.set("tokenizer_fingerprint", metadata.tokenizerFingerprint)
            try a.set("sources", metadata.sourcesJSON); try a.set("seed", metadata.seed)
            try inputIds.withUnsafeBytes { try f.createDataset("input_ids", element: .int32, shape: [rows, t]).write($0.baseAddress!, element: .int32) }
            try labels.withUnsafeBytes { try f.createDataset("labels", element: .int32, shape: [rows, t]).write($0.baseAddress!, element: .int32) }
            try split.withUnsafeBytes { try f.createDataset("split", element: .uint8, shape: [rows]).write($0.baseAddress ?? UnsafeRawPointer(bitPattern: 1)!, element: .uint8) }
            let flat = samples.flatMap { [Int64($0.row), Int64($0.start), Int64($0.length), Int64($0.source)] }
            try flat.withUnsafeBytes { try f.createDataset("samples", element: .int64, shape: [samples.count, 4]).write($0.baseAddress ?? UnsafeRawPointer(bitPattern: 8)!, element: .int64) }
            try f.close()
        }
    }
}

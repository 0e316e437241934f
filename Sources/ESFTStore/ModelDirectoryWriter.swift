import ESFTHDF5
import ESFTKernels
import ESFTModel
import Foundation

/// Element type of the weights in a model directory.
public enum StoredDType: String, Sendable {
    case fp32 = "float32", bf16 = "bfloat16"

    public init(flag: String) throws {
        switch flag {
        case "fp32", "float32": self = .fp32
        case "bf16", "bfloat16": self = .bf16
        default: throw ESFTError("--dtype must be fp32 or bf16, got '\(flag)'")
        }
    }
    var element: H5Element { self == .fp32 ? .float32 : .bfloat16 }
}

/// The layout of an esft model directory (docs/formats.md): config.json, the non-expert tensors in
/// model.h5, and the routed experts in shard files that each hold a contiguous range of expert ids for
/// every MoE layer.
public enum ModelDirectoryLayout {
    public static let format = "esft-model"
    public static let version: Int64 = 1
    public static let nonExpertFile = "model.h5"

    public static func expertFile(_ shard: Int, of count: Int) -> String {
        String(format: "experts-%05d-of-%05d.h5", shard, count)
    }

    /// The element type a tensor is stored in: the directory's, except the tensors the family keeps in float32
    /// (`ModelFamily.keepsFloat32`), which a bf16 directory stores as float32.
    public static func storedDType(_ id: ParameterID, config: ModelConfig, dtype: StoredDType) -> StoredDType {
        config.family.keepsFloat32(id) ? .fp32 : dtype
    }

    /// Contiguous ranges splitting `items` into `parts`, as expert placement does.
    public static func split(_ items: Int, into parts: Int) -> [Range<Int>] { RangeSplit.contiguousBlocks(count: parts, total: items) }
}

/// Writes a model directory one tensor at a time (memory stays near the largest tensor), under a
/// temporary name that `finish()` renames into place; a writer dropped unfinished removes everything.
public final class ModelDirectoryWriter {
    public let output: URL
    public let config: ModelConfig
    public let dtype: StoredDType
    public let expertRanges: [Range<Int>]
    private let temporary: URL
    private var nonExpert: H5File
    private var shards: [H5File]
    private var expected: [ParameterID: [Int]]
    private var finished = false
    private var scratch = FloatBuffer(count: 0)
    private var scratch16: [UInt16] = []

    /// `configJSON` is written verbatim as config.json (the HF fields, as the user gave them).
    public init(output: URL, config: ModelConfig, configJSON: Data, dtype: StoredDType, expertShards: Int) throws {
        let fm = FileManager.default
        guard !fm.fileExists(atPath: output.path) else {
            throw ESFTError("\(output.path) already exists; choose a new output directory (nothing was written)")
        }
        let experts = max(config.nRoutedExperts, 1)
        guard expertShards >= 1, expertShards <= experts else {
            throw ESFTError("--expert-shards must be in 1...\(experts) (the routed experts per layer), got \(expertShards)")
        }
        self.output = output; self.config = config; self.dtype = dtype
        expertRanges = ModelDirectoryLayout.split(config.nRoutedExperts, into: expertShards)
        temporary = AtomicWrite.temporarySibling(of: output)
        try? fm.removeItem(at: temporary)
        do { try fm.createDirectory(at: temporary, withIntermediateDirectories: true) } catch {
            throw ESFTError("\(output.path): cannot create the output directory (\(ErrorText.reason(error)))")
        }
        expected = Dictionary(uniqueKeysWithValues: config.parameterSpecs().map { ($0.id, $0.shape) })
        do {
            try configJSON.write(to: temporary.appendingPathComponent("config.json"))
            nonExpert = try H5File.create(temporary.appendingPathComponent(ModelDirectoryLayout.nonExpertFile).path)
            try Self.stamp(nonExpert, kind: "non-expert", dtype: dtype, shards: expertShards, range: nil)
            shards = []
            for (s, r) in expertRanges.enumerated() {
                let f = try H5File.create(temporary.appendingPathComponent(ModelDirectoryLayout.expertFile(s, of: expertShards)).path)
                try Self.stamp(f, kind: "experts", dtype: dtype, shards: expertShards, range: r)
                shards.append(f)
            }
        } catch {
            try? fm.removeItem(at: temporary)
            throw error
        }
    }

    deinit { if !finished { try? FileManager.default.removeItem(at: temporary) } }

    private static func stamp(_ f: H5File, kind: String, dtype: StoredDType, shards: Int, range: Range<Int>?) throws {
        try f.attributes.set("esft_format", ModelDirectoryLayout.format)
        try f.attributes.set("esft_format_version", ModelDirectoryLayout.version)
        try f.attributes.set("kind", kind)
        try f.attributes.set("dtype", dtype.rawValue)
        try f.attributes.set("expert_shards", Int64(shards))
        if let range {
            try f.attributes.set("expert_begin", Int64(range.lowerBound))
            try f.attributes.set("expert_end", Int64(range.upperBound))
        }
    }

    /// Writes one tensor (fp32 or bf16 source), converting to the directory's dtype.
    public func write(_ spec: ParameterSpec, data: Weight) throws {
        let name = spec.name, shape = spec.shape
        guard let want = expected.removeValue(forKey: spec.id) else {
            throw ESFTError("\(output.path): tensor '\(name)' is not part of this model, or was written twice")
        }
        guard want == shape else { throw ESFTError("\(output.path): tensor '\(name)' has shape \(shape), config.json implies \(want)") }
        let file: H5File
        if let e = spec.id.routedExpert?.expert {
            file = shards[expertRanges.firstIndex { $0.contains(e) }!]
        } else {
            file = nonExpert
        }
        let count = shape.reduce(1, *)
        let dtype = ModelDirectoryLayout.storedDType(spec.id, config: config, dtype: self.dtype)
        let dataset = try file.createDataset(name, element: dtype.element, shape: shape)
        switch (data, dtype) {
        case (.f32(let p), .fp32): try dataset.write(p, element: .float32)
        case (.bf16(let p), .bf16): try dataset.write(p, element: .bfloat16)
        case (.bf16, .fp32):
            if scratch.count < count { scratch = FloatBuffer(count: count, zeroed: false) }
            data.widenRows(0, 1, cols: count, into: scratch.pointer)
            try dataset.write(scratch.pointer, element: .float32)
        case (.f32(let p), .bf16):
            if scratch16.count < count { scratch16 = [UInt16](repeating: 0, count: count) }
            for i in 0..<count { scratch16[i] = SafetensorsWriter.bf16Bits(p[i]) }
            try scratch16.withUnsafeBufferPointer { try dataset.write($0.baseAddress!, element: .bfloat16) }
        }
        if dtype == .bf16 { try dataset.attributes.set("dtype", "bfloat16") }
    }

    /// Checks every tensor was written, closes the files and renames the directory into place.
    public func finish() throws {
        if let missing = expected.keys.map(config.family.tensorName).sorted().first {
            throw ESFTError("\(output.path): \(expected.count) tensor(s) not written, e.g. '\(missing)' (nothing was written)")
        }
        try nonExpert.close()
        for s in shards { try s.close() }
        try AtomicWrite.renameIntoPlace(temporary, as: output)
        finished = true
    }
}

import ESFTBase
import ESFTHDF5
import Foundation

/// The files of a training checkpoint, OUT/checkpoints/step-NNNNNN/ (docs/formats.md):
///
///     rank-00000-of-00002.h5   the routed experts rank 0 trains: groups weights/, exp_avg/, exp_avg_sq/,
///     rank-00001-of-00002.h5   each a float32 dataset per tensor, named by its global Hugging Face name
///     replicated.h5            the tensors every rank holds (written once, by rank 0), same groups
///     manifest.json            written last: the step, the sampler cursor, the options, the checksums
///
/// Names, never rank-local positions, identify tensors, so a checkpoint resumes on another rank count.
/// A checkpoint exists once its manifest has been renamed into place; a folder without one is incomplete.
public enum CheckpointLayout {
    public static let folder = "checkpoints"
    public static let manifest = "manifest.json"
    public static let replicatedFile = "replicated.h5"
    /// The three fp32 arrays a trainable tensor carries: its value and AdamW's two moments (torch's names).
    public static let groups = ["weights", "exp_avg", "exp_avg_sq"]

    public static func name(step: Int) -> String { String(format: "step-%06d", step) }
    public static func rankFile(_ rank: Int, of ranks: Int) -> String { String(format: "rank-%05d-of-%05d.h5", rank, ranks) }

    /// The step a checkpoint folder's name carries, or nil for anything else.
    public static func step(ofFolder name: String) -> Int? {
        guard name.hasPrefix("step-"), name.count == 11, let s = Int(name.dropFirst(5)), s >= 0 else { return nil }
        return s
    }

    /// The checkpoint folders under OUT/checkpoints, newest first, each complete (it has a manifest) or not.
    public static func folders(under out: URL) -> [(url: URL, step: Int, complete: Bool)] {
        let dir = out.appendingPathComponent(folder)
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []
        return names.compactMap { n -> (URL, Int, Bool)? in
            guard let s = step(ofFolder: n) else { return nil }
            let url = dir.appendingPathComponent(n)
            return (url, s, FileManager.default.fileExists(atPath: url.appendingPathComponent(manifest).path))
        }.sorted { $0.1 > $1.1 }
    }
}

/// One tensor as a checkpoint file holds it: name, shape, and the FNV-1a 64 digest of each group's bytes.
public struct CheckpointTensor: Equatable {
    public let name: String
    public let shape: [Int]
    /// Digests in `CheckpointLayout.groups` order.
    public let digests: [String]
    public var count: Int { shape.reduce(1, *) }

    public init(name: String, shape: [Int], digests: [String]) { self.name = name; self.shape = shape; self.digests = digests }

    var json: [String: Any] {
        ["name": name, "shape": shape, "fnv1a64": Dictionary(uniqueKeysWithValues: zip(CheckpointLayout.groups, digests))]
    }

    init(_ r: JSONReader) throws {
        name = try r.field("name").string()
        shape = try r.field("shape").items().map { try $0.int() }
        let d = try r.field("fnv1a64")
        digests = try CheckpointLayout.groups.map { try d.field($0).string() }
    }
}

/// One HDF5 file of a checkpoint and the tensors it holds.
public struct CheckpointFileRecord: Equatable {
    public let file: String
    public let tensors: [CheckpointTensor]
    public init(file: String, tensors: [CheckpointTensor]) { self.file = file; self.tensors = tensors }

    public var json: [String: Any] { ["file": file, "tensors": tensors.map(\.json)] }

    public init(_ r: JSONReader) throws {
        file = try r.field("file").string()
        guard !file.contains("/"), file.hasSuffix(".h5") else { throw r.fail("file '\(file)' must be a plain .h5 name in the checkpoint folder") }
        tensors = try r.field("tensors").items().map(CheckpointTensor.init)
    }
}

/// Digest and finiteness of a float array, in one pass over its bytes.
func digestFinite(_ values: UnsafePointer<Float>, count: Int) -> (digest: String, finite: Bool) {
    var d = FNV1a64()
    d.add(UnsafeRawBufferPointer(start: values, count: count * 4))
    var finite = true
    for i in 0..<count where !values[i].isFinite { finite = false; break }
    return (d.hexDigest, finite)
}

/// Writes one checkpoint HDF5 file tensor by tensor, straight from the trainer's arrays (no second copy),
/// under a temporary name; `finish` syncs it and renames it into place.
public final class CheckpointFileWriter {
    public let url: URL
    private let temporary: URL
    private var file: H5File?
    public private(set) var tensors: [CheckpointTensor] = []
    /// Called after each array is written (fault-injection tests kill the process here).
    public var afterEachArray: () -> Void = {}

    public init(_ url: URL) throws {
        self.url = url
        temporary = AtomicWrite.temporarySibling(of: url)
        try? FileManager.default.removeItem(at: temporary)
        let f = try H5File.create(temporary.path, alignment: 64)
        for g in CheckpointLayout.groups { try f.createGroup(g) }
        file = f
    }

    /// Writes a tensor's value and moments. A non-finite value is refused: NaN never reaches a checkpoint.
    public func add(name: String, shape: [Int], arrays: [UnsafePointer<Float>]) throws {
        guard let file else { throw ESFTError("\(url.path): already finished") }
        let count = shape.reduce(1, *)
        var digests: [String] = []
        for (g, values) in zip(CheckpointLayout.groups, arrays) {
            let (digest, finite) = digestFinite(values, count: count)
            guard finite else { throw ESFTError("\(url.path): \(g) of '\(name)' is not finite; the checkpoint was not written") }
            try file.createDataset("\(g)/\(name)", element: .float32, shape: shape).write(values, element: .float32)
            digests.append(digest)
            afterEachArray()
        }
        tensors.append(CheckpointTensor(name: name, shape: shape, digests: digests))
    }

    /// Closes, fsyncs and renames the file into place; returns what the manifest records of it.
    public func finish() throws -> CheckpointFileRecord {
        try file?.close()
        file = nil
        try AtomicWrite.sync(temporary)
        try AtomicWrite.renameIntoPlace(temporary, as: url)
        return CheckpointFileRecord(file: url.lastPathComponent, tensors: tensors)
    }

    /// Removes the temporary (a failed write leaves nothing).
    public func abandon() {
        try? file?.close()
        file = nil
        try? FileManager.default.removeItem(at: temporary)
    }
}

/// Reads tensors of one checkpoint file, checking every array against the manifest's digest.
public final class CheckpointFileReader {
    public let url: URL
    public let record: CheckpointFileRecord
    private let file: H5File
    private let byName: [String: CheckpointTensor]

    public init(folder: URL, record: CheckpointFileRecord) throws {
        url = folder.appendingPathComponent(record.file)
        self.record = record
        file = try H5File.openReadOnly(url.path)
        byName = Dictionary(record.tensors.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
    }

    public func contains(_ name: String) -> Bool { byName[name] != nil }

    /// Reads the tensor's value and moments into `arrays` (each `count` floats), verifying shape and digest.
    public func read(_ name: String, shape: [Int], into arrays: [UnsafeMutablePointer<Float>]) throws {
        guard let t = byName[name] else { throw ESFTError("\(url.path): no tensor '\(name)'") }
        guard t.shape == shape else { throw ESFTError("\(url.path): '\(name)' has shape \(t.shape), the model has \(shape)") }
        for (i, (g, values)) in zip(CheckpointLayout.groups, arrays).enumerated() {
            let d = try file.dataset("\(g)/\(name)")
            guard d.shape == shape else { throw ESFTError("\(url.path): dataset '\(g)/\(name)' has shape \(d.shape), the manifest says \(shape)") }
            try d.read(into: values, element: .float32)
            let (digest, _) = digestFinite(values, count: t.count)
            guard digest == t.digests[i] else {
                throw ESFTError("\(url.path): dataset '\(g)/\(name)' does not match its checksum (\(digest), the manifest says \(t.digests[i])): the file is corrupt")
            }
        }
    }

    /// Byte offset of a tensor's value in the file, for mapping it read-only (datasets are contiguous).
    func valueOffset(_ name: String) throws -> Int {
        let d = try file.dataset("weights/\(name)")
        guard let o = d.offset else { throw ESFTError("\(url.path): dataset 'weights/\(name)' is not allocated") }
        return o
    }
}

import ESFTBase
import ESFTHDF5
import Foundation

/// A complete checkpoint's manifest.json, read with the fields every reader needs (the trainer reads the
/// rest of `reader`: cursor, options, counters). Format "esft-checkpoint", version 1 (docs/formats.md).
public struct CheckpointManifest {
    public static let format = "esft-checkpoint"
    public static let version = 1

    public let folder: URL
    public let reader: JSONReader
    public let step: Int
    public let ranks: Int
    public let modelFingerprint: String
    /// The expert config the run trains (its JSON), or nil for --full.
    public let expertConfigJSON: String?
    /// The rank files, then replicated.h5.
    public let files: [CheckpointFileRecord]

    public init(folder: URL) throws {
        self.folder = folder
        let url = folder.appendingPathComponent(CheckpointLayout.manifest)
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw ESFTError("\(folder.path): no \(CheckpointLayout.manifest): the checkpoint is incomplete (its writer was interrupted)")
        }
        reader = try JSONReader.load(url, what: "checkpoint manifest")
        let format = try reader.field("format").string(), version = try reader.field("version").int()
        guard format == Self.format, version == Self.version else {
            throw ESFTError("\(url.path): 'format' \(format) version \(version) is not \(Self.format) version \(Self.version)")
        }
        step = try reader.field("step").int()
        ranks = try reader.field("ranks").int()
        modelFingerprint = try reader.field("model_fingerprint").string()
        let cfg = try reader.field("expert_config")
        if case .null = cfg.value { expertConfigJSON = nil } else { expertConfigJSON = try cfg.string() }
        files = try reader.field("files").items().map(CheckpointFileRecord.init)
        guard CheckpointLayout.step(ofFolder: folder.lastPathComponent) == step else {
            throw ESFTError("\(url.path): 'step' \(step) does not match the folder name \(folder.lastPathComponent)")
        }
        let names = files.flatMap { $0.tensors.map(\.name) }
        guard Set(names).count == names.count else { throw ESFTError("\(url.path): 'files': a tensor is listed twice") }
    }

    /// Every tensor, by name, with the file that holds it.
    public var tensorFiles: [String: CheckpointFileRecord] {
        var map: [String: CheckpointFileRecord] = [:]
        for f in files { for t in f.tensors { map[t.name] = f } }
        return map
    }

    /// Cheap checks that need no reading of the data: every file is there, is HDF5, and holds every
    /// dataset the manifest lists with its shape (a truncated or missing file fails here).
    public func checkFiles() throws {
        for record in files {
            let path = folder.appendingPathComponent(record.file).path
            let file = try H5File.openReadOnly(path)
            for t in record.tensors {
                for g in CheckpointLayout.groups {
                    let d = try file.dataset("\(g)/\(t.name)")
                    guard d.shape == t.shape else { throw ESFTError("\(path): dataset '\(g)/\(t.name)' has shape \(d.shape), the manifest says \(t.shape)") }
                }
            }
        }
    }

    /// Reads every array and compares it with its digest (what `esft inspect CHECKPOINT` reports).
    public func verify() throws {
        var buffer: [Float] = []
        for record in files {
            let reader = try CheckpointFileReader(folder: folder, record: record)
            for t in record.tensors {
                if buffer.count < 3 * t.count { buffer = [Float](repeating: 0, count: 3 * t.count) }
                try buffer.withUnsafeMutableBufferPointer { b in
                    let p = b.baseAddress!
                    try reader.read(t.name, shape: t.shape, into: [p, p + t.count, p + 2 * t.count])
                }
            }
        }
    }
}

/// The complete checkpoint folders under OUT, newest first, and a line for each incomplete one passed over
/// (a writer interrupted before its manifest landed).
public func completeCheckpoints(under out: URL) -> (folders: [URL], incomplete: [String]) {
    var folders: [URL] = [], incomplete: [String] = []
    for f in CheckpointLayout.folders(under: out) {
        if f.complete { folders.append(f.url) } else { incomplete.append("\(f.url.path): incomplete (no manifest), ignored") }
    }
    return (folders, incomplete)
}

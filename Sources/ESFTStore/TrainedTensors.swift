import ESFTBase
import ESFTModel
import Foundation

/// Trained tensors to merge into an export: F32 by Hugging Face name, from the trained.safetensors that
/// `esft train` writes or from a checkpoint folder (its weights, mapped read-only from the HDF5 files).
public struct TrainedTensors {
    public struct Tensor {
        public let shape: [Int]
        public let values: UnsafePointer<Float>
    }
    public let source: String
    /// model_fingerprint, expert_config (JSON), steps: what the trainer recorded.
    public let metadata: [String: String]
    public let tensors: [String: Tensor]
    private let mappings: [AnyObject]

    /// A trained.safetensors file or a checkpoint folder, each tensor checked against the model's shapes.
    public init(_ path: String, model: ModelDirectory) throws {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else { throw ESFTError("\(path): no such file or folder") }
        let shapes = Dictionary(uniqueKeysWithValues: model.config.parameterSpecs().map { ($0.name, $0.shape) })
        var tensors: [String: Tensor] = [:]
        if isDirectory.boolValue {
            let manifest = try CheckpointManifest(folder: URL(fileURLWithPath: path))
            try manifest.checkFiles()
            var mappings: [AnyObject] = []
            for record in manifest.files {
                let reader = try CheckpointFileReader(folder: manifest.folder, record: record)
                let fd = open(reader.url.path, O_RDONLY)
                guard fd >= 0 else { throw ESFTError("\(reader.url.path): cannot open (\(String(cString: strerror(errno))))") }
                defer { close(fd) }
                for t in record.tensors {
                    let m = try TensorMapping(fd: fd, path: reader.url.path, offset: try reader.valueOffset(t.name), bytes: 4 * t.count, name: t.name)
                    mappings.append(m)
                    tensors[t.name] = Tensor(shape: t.shape, values: m.pointer.assumingMemoryBound(to: Float.self))
                }
            }
            var meta = ["model_fingerprint": manifest.modelFingerprint, "steps": "\(manifest.step)"]
            meta["expert_config"] = manifest.expertConfigJSON
            self.metadata = meta
            self.mappings = mappings
        } else {
            let file = try SafetensorsFile(path: path)
            for (name, e) in file.entries {
                guard e.dtype == .f32, let p = file.f32View(e) ?? (e.count == 0 ? UnsafeMutablePointer<Float>(bitPattern: 4) : nil) else {
                    throw ESFTError("\(path): tensor '\(name)' must be aligned F32 (trained tensors are written by esft train)")
                }
                tensors[name] = Tensor(shape: e.shape, values: UnsafePointer(p))
            }
            metadata = file.metadata
            mappings = [file]
        }
        for (name, t) in tensors {
            guard let shape = shapes[name] else { throw ESFTError("\(path): tensor '\(name)' is not a parameter of the model in \(model.url.path)") }
            guard shape == t.shape else { throw ESFTError("\(path): tensor '\(name)' has shape \(t.shape), the model has \(shape)") }
        }
        source = path
        self.tensors = tensors
    }
}

extension LoadedModel {
    /// The model with `trained`'s tensors in place of the stored ones: read-only views of the trained file's
    /// mapping (nothing copied), kept alive by the returned parameters. Shapes were checked when `trained`
    /// was opened; `fingerprint` is this model's (ESFTMethod's modelFingerprint), checked against the recorded one.
    public func overlaying(_ trained: TrainedTensors, fingerprint: String) throws -> LoadedModel {
        if let recorded = trained.metadata["model_fingerprint"], recorded != fingerprint {
            throw ESFTError("\(trained.source): trained for a different model (fingerprint \(recorded), this model has \(fingerprint))")
        }
        let owner = TrainedTensorsOwner(trained)
        var replaced = 0
        let params = parameters.ordered.map { p -> Parameter in
            guard let t = trained.tensors[p.name] else { return p }
            replaced += 1
            return Parameter(id: p.id, name: p.name, shape: p.shape, storage: .f32(UnsafeMutablePointer(mutating: t.values)), owner: owner, owned: false)
        }
        guard replaced == trained.tensors.count else {
            let missing = Set(trained.tensors.keys).subtracting(parameters.names).sorted().first ?? "?"
            throw ESFTError("\(trained.source): tensor '\(missing)' is not among the loaded model's parameters")
        }
        return LoadedModel(config: config, parameters: ParameterSet(family: config.family, params), format: format + " + \(replaced) trained tensor(s) from \(trained.source)",
                           unused: unused)
    }
}

/// Keeps a `TrainedTensors`' mappings alive for the parameters that view them.
final class TrainedTensorsOwner {
    let trained: TrainedTensors
    init(_ trained: TrainedTensors) { self.trained = trained }
}

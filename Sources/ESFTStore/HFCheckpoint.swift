import ESFTKernels
import ESFTModel
import Foundation

/// A Hugging Face model directory: config.json plus safetensors weights, either `model.safetensors`
/// or shards listed in `model.safetensors.index.json`. Routed experts may be stored per expert
/// (`mlp.experts.E.{gate,up,down}_proj.weight`, DeepSeek's released checkpoints) or fused in 3-D
/// (`mlp.experts.gate_up_proj` [E, 2I, D] and `mlp.experts.down_proj` [E, D, I], recent transformers).
public struct HFCheckpoint {
    public let directory: URL
    public let config: ModelConfig
    public let files: [SafetensorsFile]
    /// Tensor name → the file holding it.
    private let index: [String: SafetensorsFile]

    public init(directory: URL) throws {
        self.directory = directory
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory.path, isDirectory: &isDir), isDir.boolValue else {
            throw ESFTError("\(directory.path): not a directory")
        }
        config = try ModelConfig.load(contentsOf: directory.appendingPathComponent("config.json"))
        let indexURL = directory.appendingPathComponent("model.safetensors.index.json")
        var fileNames: [String]
        var expectedFile: [String: String] = [:]
        if FileManager.default.fileExists(atPath: indexURL.path) {
            guard let data = FileManager.default.contents(atPath: indexURL.path),
                  let obj = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
                  let map = obj["weight_map"] as? [String: String] else {
                throw ESFTError("\(indexURL.path): expected a JSON object with a 'weight_map' of tensor name → file")
            }
            expectedFile = map
            fileNames = Array(Set(map.values)).sorted()
        } else if FileManager.default.fileExists(atPath: directory.appendingPathComponent("model.safetensors").path) {
            fileNames = ["model.safetensors"]
        } else {
            throw ESFTError("\(directory.path): no model.safetensors or model.safetensors.index.json")
        }
        files = try fileNames.map { try SafetensorsFile(path: directory.appendingPathComponent($0).path) }
        var index: [String: SafetensorsFile] = [:]
        for f in files { for name in f.entries.keys { index[name] = f } }
        for (name, file) in expectedFile where index[name]?.path != directory.appendingPathComponent(file).path {
            throw ESFTError("\(indexURL.path): tensor '\(name)' is listed in \(file) but that file does not hold it")
        }
        self.index = index
    }

    public var tensorNames: [String] { index.keys.sorted() }

    /// Builds every parameter the config implies. F32 tensors are zero-copy views into the mapped files;
    /// BF16/F16 tensors are widened into owned fp32 memory. Returns the names present but unused.
    public func loadParameters() throws -> (ParameterSet, unused: [String]) {
        let set = ParameterSet()
        var used = Set<String>()
        for spec in config.parameterSpecs() {
            let p = try parameter(spec, used: &used)
            set.add(p)
        }
        return (set, index.keys.filter { !used.contains($0) }.sorted())
    }

    private func parameter(_ spec: ParameterSpec, used: inout Set<String>) throws -> Parameter {
        if let file = index[spec.name], let e = file.entries[spec.name] {
            guard e.shape == spec.shape else {
                throw ESFTError("\(file.path): tensor '\(spec.name)' has shape \(e.shape), but config.json implies \(spec.shape)")
            }
            used.insert(spec.name)
            return makeParameter(spec, file: file, entry: e, elementOffset: 0)
        }
        // Fused 3-D expert layout: model.layers.L.mlp.experts.E.{gate,up,down}_proj.weight from
        // model.layers.L.mlp.experts.{gate_up_proj,down_proj}.
        if let (prefix, expert, kind) = Self.splitExpertName(spec.name) {
            let e = config.nRoutedExperts, i = config.moeIntermediateSize, d = config.hiddenSize
            let fusedName = prefix + (kind == "down_proj" ? "down_proj" : "gate_up_proj")
            if let file = index[fusedName], let entry = file.entries[fusedName] {
                let expected = kind == "down_proj" ? [e, d, i] : [e, 2 * i, d]
                guard entry.shape == expected else {
                    throw ESFTError("\(file.path): tensor '\(fusedName)' has shape \(entry.shape), but config.json implies \(expected)")
                }
                used.insert(fusedName)
                let perExpert = i * d
                let offset = kind == "down_proj" ? expert * perExpert
                    : expert * 2 * perExpert + (kind == "up_proj" ? perExpert : 0)
                return makeParameter(spec, file: file, entry: entry, elementOffset: offset)
            }
        }
        throw ESFTError("\(directory.path): missing tensor '\(spec.name)' (shape \(spec.shape)) in the safetensors weights")
    }

    /// F32 and BF16 matrices are views into the mapping (bf16 is widened at use by the kernels);
    /// 1-D tensors (norm weights, biases: a negligible share) and F16 are widened into owned memory.
    private func makeParameter(_ spec: ParameterSpec, file: SafetensorsFile, entry: SafetensorsFile.Entry,
                               elementOffset: Int) -> Parameter {
        let count = spec.shape.reduce(1, *)
        if let view = file.f32View(entry, elementOffset: elementOffset) {
            return Parameter(name: spec.name, shape: spec.shape, value: view, owner: file.mapping, owned: false)
        }
        if spec.shape.count > 1, let view = file.bf16View(entry, elementOffset: elementOffset) {
            return Parameter(name: spec.name, shape: spec.shape, storage: .bf16(view), owner: file.mapping, owned: false)
        }
        let p = Parameter(name: spec.name, shape: spec.shape)
        file.readFloats(entry, elementOffset: elementOffset, count: count, into: p.value)
        return p
    }

    /// "model.layers.3.mlp.experts.5.up_proj.weight" → ("model.layers.3.mlp.experts.", 5, "up_proj").
    static func splitExpertName(_ name: String) -> (String, Int, String)? {
        guard name.hasSuffix("_proj.weight"), let r = name.range(of: ".mlp.experts.") else { return nil }
        let rest = name[r.upperBound...].split(separator: ".")
        guard rest.count == 3, let e = Int(rest[0]) else { return nil }
        return (String(name[..<r.upperBound]), e, String(rest[1]))
    }
}

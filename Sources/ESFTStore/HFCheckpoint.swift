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
    /// How FP8 matrices are scaled (config.json's quantization_config); nil for an unquantized checkpoint.
    public let quantization: FP8Quantization?
    /// Tensor name → the file holding it.
    private let index: [String: SafetensorsFile]

    public init(directory: URL) throws {
        self.directory = directory
        config = try loadDirectoryConfig(directory)
        quantization = try FP8Quantization.read(configAt: directory.appendingPathComponent("config.json"))
        let indexURL = directory.appendingPathComponent("model.safetensors.index.json")
        var fileNames: [String]
        var expectedFile: [String: String] = [:]
        if FileManager.default.fileExists(atPath: indexURL.path) {
            // JSONReader: syntax errors with line and column, each entry's type checked by name.
            let weightMap = try JSONReader.load(indexURL, what: "safetensors index").field("weight_map")
            var map: [String: String] = [:]
            for tensor in try weightMap.keys() { map[tensor] = try weightMap.field(tensor).string() }
            expectedFile = map
            fileNames = Array(Set(map.values)).sorted()
            for name in fileNames { try Self.checkInside(directory, name, index: indexURL.path, tensor: map.first { $0.value == name }!.key) }
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

    /// A weight_map file must lie in the model directory: no absolute path, no `..`, no symlink out of it
    /// (an index must not make import read, say, /etc or another model's files).
    static func checkInside(_ directory: URL, _ name: String, index: String, tensor: String) throws {
        let parts = name.split(separator: "/", omittingEmptySubsequences: false)
        let field = "weight_map.\(tensor)"
        guard !name.isEmpty, !name.hasPrefix("/"), !parts.contains("..") else {
            throw ESFTError(ErrorText.field(index, field, "\"\(name)\" is not a file name inside the model directory (no absolute paths, no '..')"))
        }
        let base = OutputGuard.canonical(directory.path), target = OutputGuard.canonical(directory.appendingPathComponent(name).path)
        guard target.hasPrefix(base + "/") else {
            throw ESFTError(ErrorText.field(index, field, "\"\(name)\" resolves to \(target), outside the model directory \(base) (a symlink out of it)"))
        }
    }

    public var tensorNames: [String] { index.keys.sorted() }

    /// Where a tensor's values are: a file, its entry, and an element offset (non-zero for one expert's
    /// slice of a fused 3-D tensor).
    public struct TensorSource {
        public let file: SafetensorsFile
        public let entry: SafetensorsFile.Entry
        public let elementOffset: Int
        public let count: Int
        /// An FP8 matrix's block scales (checked when the source was located).
        public let scale: BlockScale?

        /// A zero-copy operand when the stored dtype and alignment allow, else nil.
        public var view: Weight? {
            if let p = file.f32View(entry, elementOffset: elementOffset) { return .f32(p) }
            if let p = file.bf16View(entry, elementOffset: elementOffset) { return .bf16(p) }
            return nil
        }
        public var dtype: TensorDType { entry.dtype }

        /// Converts to fp32 (any stored dtype; FP8 dequantized with its block scales).
        public func read(into dst: UnsafeMutablePointer<Float>) {
            if let scale {
                scale.dequantize(codes: file.raw(entry).assumingMemoryBound(to: UInt8.self), dtype: entry.dtype, into: dst)
            } else {
                file.readFloats(entry, elementOffset: elementOffset, count: count, into: dst)
            }
        }

        /// Drops the pages behind this tensor from the process (streaming import keeps RSS near one tensor).
        public func release() { file.release(entry, elementOffset: elementOffset, count: count) }
    }

    /// Locates a tensor the config implies, per expert or inside a fused 3-D expert tensor.
    public func source(_ spec: ParameterSpec) throws -> TensorSource {
        if let file = index[spec.name], let e = file.entries[spec.name] {
            guard e.shape == spec.shape else {
                throw ESFTError("\(file.path): tensor '\(spec.name)' has shape \(e.shape), but config.json implies \(spec.shape)")
            }
            var scale: BlockScale?
            if e.dtype.isFP8 {
                let scaleName = FP8Quantization.scaleName(of: spec.name), scaleFile = index[scaleName]
                scale = try BlockScale(weight: e, in: file, scale: scaleFile?.entries[scaleName], scaleFile: scaleFile,
                                       quantization: quantization)
            }
            return TensorSource(file: file, entry: e, elementOffset: 0, count: e.count, scale: scale)
        }
        if let fusedName = config.family.fusedExpertName(of: spec.id), case .routedExpert(let kind) = spec.id.kind, let expert = spec.id.expert {
            let e = config.nRoutedExperts, i = config.moeIntermediateSize, d = config.hiddenSize
            if let file = index[fusedName], let entry = file.entries[fusedName] {
                let expected = kind == .down ? [e, d, i] : [e, 2 * i, d]
                guard entry.shape == expected else {
                    throw ESFTError("\(file.path): tensor '\(fusedName)' has shape \(entry.shape), but config.json implies \(expected)")
                }
                guard !entry.dtype.isFP8 else {
                    throw ESFTError("\(file.path): tensor '\(fusedName)' is a fused \(entry.dtype.rawValue) expert tensor; FP8 is read per expert (`mlp.experts.E.*_proj.weight` with `weight_scale_inv`), as the FP8 releases store it")
                }
                let perExpert = i * d
                let offset = kind == .down ? expert * perExpert
                    : expert * 2 * perExpert + (kind == .up ? perExpert : 0)
                return TensorSource(file: file, entry: entry, elementOffset: offset, count: perExpert, scale: nil)
            }
        }
        throw ESFTError("\(directory.path): missing tensor '\(spec.name)' (shape \(spec.shape)) in the safetensors weights")
    }

    /// Stored tensor names that no parameter of the config uses (reported, not an error). FP8 scales of
    /// used weights count as used; the multi-token-prediction layers are listed apart (`mtpTensorNames`).
    public func unusedTensorNames() -> [String] {
        var used = Set<String>()
        for spec in config.parameterSpecs() {
            if let file = index[spec.name] {
                used.insert(spec.name)
                if file.entries[spec.name]?.dtype.isFP8 == true { used.insert(FP8Quantization.scaleName(of: spec.name)) }
            } else if let fused = config.family.fusedExpertName(of: spec.id) { used.insert(fused) }
        }
        let mtp = Set(mtpTensorNames())
        return index.keys.filter { !used.contains($0) && !mtp.contains($0) }.sorted()
    }

    /// Tensors of the multi-token-prediction layers a DeepSeek-V3 checkpoint may carry (`num_nextn_predict_layers`
    /// of them, at layer indices num_hidden_layers and up, as transformers ignores them): skipped on import,
    /// since esft trains and runs the main model only.
    public func mtpTensorNames() -> [String] {
        let prefix = "model.layers."
        return index.keys.filter { name in
            guard name.hasPrefix(prefix), let layer = Int(name.dropFirst(prefix.count).prefix { $0 != "." }) else { return false }
            return layer >= config.numLayers
        }.sorted()
    }

    /// Builds every parameter the config implies. F32 and BF16 matrices are views into the mapped files
    /// (bf16 is widened at use by the kernels); 1-D tensors (norm weights, biases: a negligible share)
    /// and F16 are widened into owned memory; FP8 matrices are dequantized into owned memory and rounded to
    /// bf16, the values `esft import` stores by default (import FP8 checkpoints once: this path holds them
    /// as fp32). Returns the names present but unused.
    public func loadParameters() throws -> (ParameterSet, unused: [String]) {
        let set = ParameterSet(family: config.family)
        for spec in config.parameterSpecs() {
            let src = try source(spec)
            if let view = src.view, spec.shape.count > 1 || src.dtype == .f32 {
                set.add(Parameter(spec, weight: view, owner: src.file.mapping))
            } else {
                let p = Parameter(spec)
                src.read(into: p.value)
                if src.scale != nil { for i in 0..<p.count { p.value[i] = Float(bitPattern: UInt32(SafetensorsWriter.bf16Bits(p.value[i])) << 16) } }
                set.add(p)
            }
        }
        return (set, unusedTensorNames())
    }
}

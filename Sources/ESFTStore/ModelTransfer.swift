import ESFTKernels
import ESFTModel
import Foundation

/// ProgressReporter lines for long work (one per N tensors), printed by the commands.
public typealias ProgressReporter = (String) -> Void

/// Hugging Face safetensors → esft model directory, one tensor at a time.
public enum ModelImport {
    /// `dtype` nil keeps bf16 when every matrix in the checkpoint is BF16, else fp32.
    @discardableResult
    public static func run(from hfDir: URL, to out: URL, dtype: StoredDType?, expertShards: Int,
                           progress: ProgressReporter = { _ in }) throws -> (tensors: Int, dtype: StoredDType) {
        let checkpoint = try HFCheckpoint(directory: hfDir)
        let specs = checkpoint.config.parameterSpecs()
        let sources = try specs.map { try checkpoint.source($0) }  // every tensor located and checked (FP8 scales too) first
        // bf16 when every matrix is BF16 or FP8, not counting those the family keeps in float32 anyway.
        let matrices = zip(specs, sources).filter { $1.entry.shape.count > 1 && !checkpoint.config.family.keepsFloat32($0.id) }
        let chosen = dtype ?? (!matrices.isEmpty && matrices.allSatisfy { $1.dtype == .bf16 || $1.dtype.isFP8 } ? .bf16 : .fp32)
        let mtp = checkpoint.mtpTensorNames(), unused = checkpoint.unusedTensorNames()
        if !mtp.isEmpty {
            progress("skipping \(mtp.count) tensors of layers past num_hidden_layers \(checkpoint.config.numLayers) (DeepSeek-V3's multi-token-prediction layers; esft trains and runs the main model only)")
        }
        if !unused.isEmpty {
            progress("ignoring \(unused.count) tensors no parameter of the config uses: \(unused.prefix(5).joined(separator: ", "))\(unused.count > 5 ? ", ..." : "")")
        }
        var configJSON = try Data(contentsOf: hfDir.appendingPathComponent("config.json"))
        if checkpoint.quantization != nil {  // the imported weights are dequantized: the copy must not say FP8
            configJSON = JSONText.removingMember("quantization_config", from: configJSON)
        }
        let writer = try ModelDirectoryWriter(output: out, config: checkpoint.config, configJSON: configJSON,
                                              dtype: chosen, expertShards: expertShards)
        var owned = FloatBuffer(count: 0)
        for (i, (spec, src)) in zip(specs, sources).enumerated() {
            if let view = src.view {
                try writer.write(spec, data: view)
            } else {  // F16, FP8 (dequantized), or unaligned: convert through a buffer the size of the largest such tensor
                if owned.count < src.count { owned = FloatBuffer(count: src.count, zeroed: false) }
                src.read(into: owned.pointer)
                try writer.write(spec, data: .f32(owned.pointer))
            }
            src.release()
            if (i + 1) % 200 == 0 || i + 1 == specs.count { progress("imported \(i + 1)/\(specs.count) tensors") }
        }
        try writer.finish()
        return (specs.count, chosen)
    }
}

/// A randomly initialised esft model directory, written one tensor at a time (see `RandomInit`).
public enum ModelInit {
    public static func run(config: ModelConfig, configJSON: Data, to out: URL, seed: UInt64, dtype: StoredDType,
                           expertShards: Int, progress: ProgressReporter = { _ in }) throws {
        let writer = try ModelDirectoryWriter(output: out, config: config, configJSON: configJSON, dtype: dtype,
                                              expertShards: expertShards)
        let specs = config.parameterSpecs()
        var buffer = FloatBuffer(count: 0)
        for (i, spec) in specs.enumerated() {
            let count = spec.shape.reduce(1, *)
            if buffer.count < count { buffer = FloatBuffer(count: count, zeroed: false) }
            RandomInit.fill(spec, index: i, seed: seed, std: Float(config.initializerRange), into: buffer.pointer)
            try writer.write(spec, data: .f32(buffer.pointer))
            if (i + 1) % 200 == 0 || i + 1 == specs.count { progress("initialised \(i + 1)/\(specs.count) tensors") }
        }
        try writer.finish()
    }
}

/// esft model directory (+ trained tensors) → Hugging Face directory, ESFT adapter, or model directory.
public enum ModelExport {
    /// A Hugging Face directory: config.json, model-0000i-of-0000N.safetensors, model.safetensors.index.json.
    public static func safetensors(model: ModelDirectory, trained: TrainedTensors?, to out: URL, dtype: StoredDType?,
                                   maxShardBytes: Int, progress: ProgressReporter = { _ in }) throws {
        let target: TensorDType = (dtype ?? model.dtype) == .fp32 ? .f32 : .bf16
        let infos = try model.tensorInfos()
        var shards: [[ModelDirectory.TensorInfo]] = [[]]
        var size = 0
        // Tensors the family keeps in float32 stay F32, as transformers writes them.
        func stored(_ info: ModelDirectory.TensorInfo) -> TensorDType { model.config.family.keepsFloat32(info.spec.id) ? .f32 : target }
        for info in infos {
            let bytes = info.shape.reduce(1, *) * stored(info).size
            if size > 0 && size + bytes > maxShardBytes { shards.append([]); size = 0 }
            shards[shards.count - 1].append(info); size += bytes
        }
        try writeDirectory(out) { tmp in
            try FileManager.default.copyItem(at: model.url.appendingPathComponent("config.json"), to: tmp.appendingPathComponent("config.json"))
            var weightMap: [String: String] = [:]
            var total = 0, done = 0
            for (s, shard) in shards.enumerated() {
                let name = String(format: "model-%05d-of-%05d.safetensors", s + 1, shards.count)
                let headers = shard.map { TensorHeader(name: $0.name, shape: $0.shape, dtype: stored($0)) }
                try SafetensorsWriter.write(headers, metadata: ["format": "pt"], to: tmp.appendingPathComponent(name)) { i, emit in
                    let info = shard[i]
                    if let t = trained?.tensors[info.name] {
                        try emit(.f32(t.values))
                    } else {
                        try model.withTensor(info) { try emit($0) }
                    }
                    done += 1
                    if done % 200 == 0 || done == infos.count { progress("exported \(done)/\(infos.count) tensors") }
                }
                for t in headers { weightMap[t.name] = name; total += t.bytes }
            }
            let index: [String: Any] = ["metadata": ["total_size": total], "weight_map": weightMap]
            try JSONSerialization.data(withJSONObject: index, options: [.prettyPrinted, .sortedKeys])
                .write(to: tmp.appendingPathComponent("model.safetensors.index.json"))
        }
    }

    /// The ESFT reference's adapter: expert_cfg.json + model.safetensors with exactly the trained tensors
    /// (full HF names, as the reference's trainer saves them; its `add_adapter` loads them strictly).
    public static func adapter(trained: TrainedTensors, expertConfigJSON: Data, to out: URL) throws {
        try writeDirectory(out) { tmp in
            try expertConfigJSON.write(to: tmp.appendingPathComponent("expert_cfg.json"))
            let tensors = trained.tensors.sorted { $0.key < $1.key }.map { n, t -> TensorToWrite in
                TensorToWrite(name: n, shape: t.shape, data: t.values)
            }
            try SafetensorsWriter.write(tensors, metadata: ["format": "pt"], to: tmp.appendingPathComponent("model.safetensors"))
        }
    }

    /// A new esft model directory with the trained tensors merged in.
    public static func modelDirectory(model: ModelDirectory, trained: TrainedTensors?, to out: URL, dtype: StoredDType?,
                                      expertShards: Int?, progress: ProgressReporter = { _ in }) throws {
        let configJSON = try Data(contentsOf: model.url.appendingPathComponent("config.json"))
        let writer = try ModelDirectoryWriter(output: out, config: model.config, configJSON: configJSON,
                                              dtype: dtype ?? model.dtype, expertShards: expertShards ?? model.expertRanges.count)
        let infos = try model.tensorInfos()
        for (i, info) in infos.enumerated() {
            if let t = trained?.tensors[info.name] {
                try writer.write(info.spec, data: .f32(t.values))
            } else {
                try model.withTensor(info) { try writer.write(info.spec, data: $0) }
            }
            if (i + 1) % 200 == 0 || i + 1 == infos.count { progress("exported \(i + 1)/\(infos.count) tensors") }
        }
        try writer.finish()
    }

    /// Builds a directory under a temporary name and renames it into place when complete.
    static func writeDirectory(_ out: URL, _ body: (URL) throws -> Void) throws {
        let fm = FileManager.default
        guard !fm.fileExists(atPath: out.path) else { throw ESFTError("\(out.path) already exists; choose a new output (nothing was written)") }
        try AtomicWrite.create(out) { tmp in
            try fm.createDirectory(at: tmp, withIntermediateDirectories: true)
            try body(tmp)
        }
    }
}

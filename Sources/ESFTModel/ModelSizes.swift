import ESFTKernels
import Foundation

/// The bytes a config implies, computed from its fields alone (in Double: no product can overflow, and
/// nothing is allocated: `parameterSpecs()` of a config with 10⁹ layers would itself exhaust memory).
/// Commands check these before they allocate or write anything; a job that cannot fit is refused with the
/// field at fault and the bytes it implies, instead of ending in "Fatal error: out of memory".
public struct ModelSizes {
    public let config: ModelConfig
    /// Every parameter (elements), as `parameterSpecs()` lists them.
    public let parameters: Double
    /// How many tensors `parameterSpecs()` would list.
    public let tensors: Double
    /// The largest tensor (elements): what a streaming writer holds at once.
    public let largestTensor: Double

    /// Limits no real DeepSeek-V2-style model comes near (DeepSeek-V3: hidden 7168, 61 layers, 256 experts,
    /// vocabulary 129280); a value beyond them is a typo, and would make allocations no machine has.
    public static let limits: [(field: String, max: Int)] = [
        ("vocab_size", 1 << 24), ("hidden_size", 1 << 17), ("intermediate_size", 1 << 20), ("moe_intermediate_size", 1 << 20),
        ("num_hidden_layers", 4096), ("num_attention_heads", 4096), ("kv_lora_rank", 1 << 17), ("q_lora_rank", 1 << 17),
        ("qk_nope_head_dim", 1 << 14), ("qk_rope_head_dim", 1 << 14), ("v_head_dim", 1 << 14), ("n_routed_experts", 1 << 14),
        ("n_shared_experts", 1024), ("max_position_embeddings", 1 << 24),
    ]

    public init(_ c: ModelConfig) {
        config = c
        let d = Double(c.hiddenSize), v = Double(c.vocabSize)
        let (attention, attentionTensors, attentionLargest) = c.attention.sizes(hidden: d)
        var largest = max(v * d, attentionLargest)
        let moeLayers = Double(ModelSizes.moeLayerCount(c)), denseLayers = Double(c.numLayers) - moeLayers
        let e = Double(c.nRoutedExperts), im = Double(c.moeIntermediateSize), shared = Double(c.sharedExperts.width)
        let dense = 3 * Double(c.intermediateSize) * d
        let gate = { if case .gated = c.sharedExperts { return d } else { return 0 } }()
        let bias = c.router.selectionBias ? e : 0
        let moe = e * d + e * 3 * im * d + (shared > 0 ? 3 * shared * d : 0) + gate + bias
        if denseLayers > 0 { largest = max(largest, Double(c.intermediateSize) * d) }
        if moeLayers > 0 { largest = max(largest, e * d, im * d, shared * d) }
        let layers = Double(c.numLayers)
        parameters = v * d * (c.tieWordEmbeddings ? 1 : 2) + layers * (attention + 2 * d) + d + denseLayers * dense + moeLayers * moe
        tensors = 2 + (c.tieWordEmbeddings ? 0 : 1) + layers * (attentionTensors + 2) + denseLayers * 3
            + moeLayers * (1 + 3 * e + (shared > 0 ? 3 : 0) + (gate > 0 ? 1 : 0) + (bias > 0 ? 1 : 0))
        largestTensor = largest
    }

    /// Elements of every routed expert of every MoE layer.
    public var routedExpertParameters: Double {
        Double(ModelSizes.moeLayerCount(config)) * Double(config.nRoutedExperts) * 3 * Double(config.moeIntermediateSize) * Double(config.hiddenSize)
    }

    /// MoE layers without listing them (a config may claim billions of layers).
    static func moeLayerCount(_ c: ModelConfig) -> Int {
        c.nRoutedExperts > 0 ? c.moeLayerRule.count(layers: c.numLayers) : 0
    }

    /// fp32 logits the head holds for `rows` rows of `seqLen` tokens: one chunk of at most
    /// MoETransformer.headChunkBytes (the head runs chunk by chunk), as much again for their gradient in training.
    public func logitsBytes(rows: Int, seqLen: Int) -> Double {
        min(Double(rows) * Double(seqLen) * Double(config.vocabSize) * 4, Double(MoETransformer.headChunkBytes))
    }

    /// What a forward (and backward, when training) of `rows` rows holds beyond the weights, at least: a chunk
    /// of fp32 logits (and their gradient), attention's T×T score matrix (and its gradient), and the hidden
    /// states every token keeps per layer when training (two when not): a lower bound, enough to refuse what
    /// cannot fit (esft plan's ActivationMemory predicts the whole).
    public func batchBytes(rows: Int, seqLen: Int, training: Bool) -> Double {
        let t = Double(seqLen), factor: Double = training ? 2 : 1
        let hidden = Double(rows) * t * Double(config.hiddenSize) * 4 * (training ? Double(config.numLayers) : 2)
        return factor * (logitsBytes(rows: rows, seqLen: seqLen) + t * t * 4) + hidden
    }

    /// Refuses a batch whose activations (batchBytes) exceed the machine's memory; `what` names the options.
    public func requireBatchMemory(rows: Int, seqLen: Int, training: Bool, what: String, source: String) throws {
        try requireMemory(batchBytes(rows: rows, seqLen: seqLen, training: training),
                          for: "\(what): hidden states (rows × tokens × hidden_size per layer), a chunk of logits and attention scores (tokens²)", field: "vocab_size", source: source)
    }

    /// The machine's physical memory in bytes.
    public static var physicalMemory: Double {
        Double(sysconf(Int32(_SC_PHYS_PAGES))) * Double(sysconf(Int32(_SC_PAGESIZE)))
    }

    /// The field that contributes most to the parameter count, for messages (the layers or the experts).
    public var dominantField: String {
        let c = config, d = Double(c.hiddenSize)
        let experts = routedExpertParameters
        let embeddings = Double(c.vocabSize) * d * 2
        if embeddings >= parameters / 2 { return "vocab_size" }
        if experts >= parameters / 2 { return Double(c.nRoutedExperts) >= Double(c.numLayers) ? "n_routed_experts" : "num_hidden_layers" }
        return "num_hidden_layers"
    }

    /// Refuses `bytes` that exceed the machine's memory (`what`: what the bytes are for).
    public func requireMemory(_ bytes: Double, for what: String, field: String? = nil, source: String) throws {
        let memory = ModelSizes.physicalMemory
        guard bytes > memory else { return }
        throw ESFTError(ErrorText.field(source, field ?? dominantField,
                                        "\(what) needs \(ModelSizes.format(bytes)), more than this machine's \(ModelSizes.format(memory)) of memory"))
    }

    /// Refuses `bytes` on disk beyond the free space of the file system that will hold `output`.
    public func requireDisk(_ bytes: Double, output: URL, field: String? = nil, source: String) throws {
        var url = output.deletingLastPathComponent()
        while !FileManager.default.fileExists(atPath: url.path), url.path != "/" { url.deleteLastPathComponent() }
        var fs = statvfs()
        guard statvfs(url.path, &fs) == 0, fs.f_blocks > 0 else { return }   // no blocks: a pseudo file system (/proc)
        let free = Double(fs.f_bavail) * Double(fs.f_frsize)
        guard bytes > free else { return }
        throw ESFTError(ErrorText.field(source, field ?? dominantField,
                                        "the model needs \(ModelSizes.format(bytes)) on disk, more than the \(ModelSizes.format(free)) free on \(url.path)"))
    }

    /// "1.5 GB" (decimal units, as df and the docs state sizes).
    public static func format(_ bytes: Double) -> String {
        let units = ["bytes", "kB", "MB", "GB", "TB", "PB", "EB"]
        var value = bytes, unit = 0
        while value >= 1000, unit < units.count - 1 { value /= 1000; unit += 1 }
        return unit == 0 ? "\(Int(value)) bytes" : String(format: value >= 100 ? "%.0f %@" : "%.1f %@", value, units[unit])
            + (bytes >= 1e21 ? String(format: " (%.1e bytes)", bytes) : "")
    }
}

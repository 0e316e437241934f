import ESFTKernels
import Foundation

/// One model tensor by its Hugging Face name. Its values are either a read-only view into a mapped
/// file (frozen: fp32, or bf16 that kernels widen block by block at use) or owned fp32 memory; a trainable
/// parameter always owns fp32 values and a gradient.
public final class Parameter {
    public enum Storage {
        case f32(UnsafeMutablePointer<Float>)
        case bf16(UnsafePointer<UInt16>)
    }

    public let name: String
    public let shape: [Int]
    public let count: Int
    public private(set) var storage: Storage
    public private(set) var grad: FloatBuffer?
    /// Keeps the memory behind `storage` alive (a mapping or a FloatBuffer).
    private var owner: AnyObject?
    public private(set) var ownsValue: Bool

    public init(name: String, shape: [Int], storage: Storage, owner: AnyObject?, owned: Bool) {
        self.name = name; self.shape = shape; self.count = shape.reduce(1, *)
        self.storage = storage; self.owner = owner; self.ownsValue = owned
    }

    public convenience init(name: String, shape: [Int], value: UnsafeMutablePointer<Float>, owner: AnyObject?, owned: Bool) {
        self.init(name: name, shape: shape, storage: .f32(value), owner: owner, owned: owned)
    }

    /// A frozen, read-only view (fp32 or bf16) of memory kept alive by `owner`.
    public convenience init(name: String, shape: [Int], weight: Weight, owner: AnyObject) {
        switch weight {
        case .f32(let p): self.init(name: name, shape: shape, storage: .f32(UnsafeMutablePointer(mutating: p)), owner: owner, owned: false)
        case .bf16(let p): self.init(name: name, shape: shape, storage: .bf16(p), owner: owner, owned: false)
        }
    }

    /// A parameter with owned, zero-initialised values.
    public convenience init(name: String, shape: [Int]) {
        let b = FloatBuffer(count: shape.reduce(1, *))
        self.init(name: name, shape: shape, value: b.pointer, owner: b, owned: true)
    }

    /// The operand for matrix products.
    public var weight: Weight {
        switch storage {
        case .f32(let p): return .f32(p)
        case .bf16(let p): return .bf16(p)
        }
    }

    /// fp32 values. Every owned or trainable parameter, and every mapped F32 one, has them; a frozen
    /// bf16 matrix does not (use `weight`, or `copyRows`).
    public var value: UnsafeMutablePointer<Float> {
        guard case .f32(let p) = storage else { preconditionFailure("\(name) is stored as bf16; use `weight`") }
        return p
    }

    public var isBF16: Bool { if case .bf16 = storage { return true } else { return false } }
    public var isTrainable: Bool { grad != nil }
    public var gradPointer: UnsafeMutablePointer<Float>? { grad?.pointer }

    /// fp32 copies of rows [row, row+count) of a 2-D tensor (an embedding lookup, for instance).
    public func copyRows(_ row: Int, _ rows: Int, into dst: UnsafeMutablePointer<Float>) {
        weight.widenRows(row, rows, cols: shape.count > 1 ? shape[1...].reduce(1, *) : 1, into: dst)
    }

    /// Moves values into owned fp32 memory (weights that train must be writable, and fp32) and adds a gradient.
    public func makeTrainable() {
        makeOwnedF32()
        if grad == nil { grad = FloatBuffer(count: count) }
    }

    /// Copies (and widens) mapped values into owned fp32 memory.
    public func makeOwnedF32() {
        guard !ownsValue || isBF16 else { return }
        let b = FloatBuffer(count: count, zeroed: false)
        weight.widenRows(0, 1, cols: count, into: b.pointer)
        storage = .f32(b.pointer); owner = b; ownsValue = true
    }

    public func zeroGrad() { grad?.zero() }

    /// Bytes of the stored values (2 per element for bf16, 4 for fp32).
    public var storedBytes: Int { isBF16 ? 2 * count : 4 * count }
}

/// The model's parameters by name, in a stable order (HF's module order).
public final class ParameterSet {
    public private(set) var ordered: [Parameter] = []
    private var byName: [String: Parameter] = [:]

    public init(_ parameters: [Parameter] = []) { for p in parameters { add(p) } }

    public func add(_ p: Parameter) {
        precondition(byName[p.name] == nil, "duplicate parameter \(p.name)")
        ordered.append(p); byName[p.name] = p
    }

    public subscript(name: String) -> Parameter? { byName[name] }

    public func require(_ name: String, shape: [Int]) throws -> Parameter {
        guard let p = byName[name] else { throw ESFTError("missing tensor '\(name)'") }
        guard p.shape == shape else { throw ESFTError("tensor '\(name)' has shape \(p.shape), expected \(shape) from config.json") }
        return p
    }

    public var trainable: [Parameter] { ordered.filter(\.isTrainable) }
    public var names: [String] { ordered.map(\.name) }
}

/// Every tensor of a DeepseekV2ForCausalLM with its HF name and shape, in module order.
/// Routed experts use the per-expert names of DeepSeek's released checkpoints.
public struct ParameterSpec: Equatable {
    public let name: String
    public let shape: [Int]
}

extension ModelConfig {
    public func parameterSpecs() -> [ParameterSpec] {
        var specs: [ParameterSpec] = []
        func add(_ n: String, _ s: [Int]) { specs.append(ParameterSpec(name: n, shape: s)) }
        let d = hiddenSize, h = numHeads
        add("model.embed_tokens.weight", [vocabSize, d])
        for l in 0..<numLayers {
            let p = "model.layers.\(l)."
            let a = p + "self_attn."
            if let rq = qLoraRank {
                add(a + "q_a_proj.weight", [rq, d])
                if attentionBias { add(a + "q_a_proj.bias", [rq]) }
                add(a + "q_a_layernorm.weight", [rq])
                add(a + "q_b_proj.weight", [h * qkHeadDim, rq])
            } else {
                add(a + "q_proj.weight", [h * qkHeadDim, d])
            }
            add(a + "kv_a_proj_with_mqa.weight", [kvLoraRank + qkRopeHeadDim, d])
            if attentionBias { add(a + "kv_a_proj_with_mqa.bias", [kvLoraRank + qkRopeHeadDim]) }
            add(a + "kv_a_layernorm.weight", [kvLoraRank])
            add(a + "kv_b_proj.weight", [h * (qkNopeHeadDim + vHeadDim), kvLoraRank])
            add(a + "o_proj.weight", [d, h * vHeadDim])
            if attentionBias { add(a + "o_proj.bias", [d]) }
            let m = p + "mlp."
            if isMoELayer(l) {
                add(m + "gate.weight", [nRoutedExperts, d])
                for e in 0..<nRoutedExperts {
                    for spec in expertSpecs(prefix: m + "experts.\(e).", inner: moeIntermediateSize) { specs.append(spec) }
                }
                if nSharedExperts > 0 {
                    for spec in expertSpecs(prefix: m + "shared_experts.", inner: moeIntermediateSize * nSharedExperts) {
                        specs.append(spec)
                    }
                }
            } else {
                for spec in expertSpecs(prefix: m, inner: intermediateSize) { specs.append(spec) }
            }
            add(p + "input_layernorm.weight", [d])
            add(p + "post_attention_layernorm.weight", [d])
        }
        add("model.norm.weight", [d])
        if !tieWordEmbeddings { add("lm_head.weight", [vocabSize, d]) }
        return specs
    }

    private func expertSpecs(prefix: String, inner: Int) -> [ParameterSpec] {
        [ParameterSpec(name: prefix + "gate_proj.weight", shape: [inner, hiddenSize]),
         ParameterSpec(name: prefix + "up_proj.weight", shape: [inner, hiddenSize]),
         ParameterSpec(name: prefix + "down_proj.weight", shape: [hiddenSize, inner])]
    }

    /// The decoder layer a tensor belongs to (nil for embeddings, final norm and lm_head).
    public static func layerIndex(ofParameter name: String) -> Int? {
        guard name.hasPrefix("model.layers.") else { return nil }
        let rest = name.dropFirst("model.layers.".count)
        return Int(rest.prefix { $0.isNumber })
    }
}

import ESFTKernels
import Foundation

/// One model tensor, known by its `ParameterID`. Its values are either a read-only view into a mapped
/// file (frozen: fp32, or bf16 that kernels widen block by block at use) or owned fp32 memory; a trainable
/// parameter always owns fp32 values and a gradient (its own, or views into the trainer's arenas).
public final class Parameter {
    public enum Storage {
        case f32(UnsafeMutablePointer<Float>)
        case bf16(UnsafePointer<UInt16>)
    }

    public let id: ParameterID
    /// The tensor's name in its family's checkpoints (`ModelFamily.tensorName(of:)`), what files and messages use.
    public let name: String
    public let shape: [Int]
    public let count: Int
    public private(set) var storage: Storage
    public private(set) var gradPointer: UnsafeMutablePointer<Float>?
    /// Keep the memory behind `storage` and `gradPointer` alive (a mapping, a FloatBuffer or an arena).
    private var owner: AnyObject?
    private var gradOwner: AnyObject?
    public private(set) var ownsValue: Bool

    public init(id: ParameterID, name: String, shape: [Int], storage: Storage, owner: AnyObject?, owned: Bool) {
        self.id = id; self.name = name; self.shape = shape; self.count = shape.reduce(1, *)
        self.storage = storage; self.owner = owner; self.ownsValue = owned
    }

    /// A frozen, read-only view (fp32 or bf16) of memory kept alive by `owner`.
    public convenience init(_ spec: ParameterSpec, weight: Weight, owner: AnyObject) {
        switch weight {
        case .f32(let p): self.init(id: spec.id, name: spec.name, shape: spec.shape, storage: .f32(UnsafeMutablePointer(mutating: p)), owner: owner, owned: false)
        case .bf16(let p): self.init(id: spec.id, name: spec.name, shape: spec.shape, storage: .bf16(p), owner: owner, owned: false)
        }
    }

    /// A parameter with owned, zero-initialised values.
    public convenience init(_ spec: ParameterSpec) {
        let b = FloatBuffer(count: spec.count)
        self.init(id: spec.id, name: spec.name, shape: spec.shape, storage: .f32(b.pointer), owner: b, owned: true)
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
        // Invariant: `value` is read only for 1-D tensors (loaders widen bf16 norms and biases to owned fp32) and
        // for owned or trainable tensors (always fp32); matrices are read through `weight`.
        guard case .f32(let p) = storage else { preconditionFailure("\(name) is stored as bf16; use `weight`") }
        return p
    }

    public var isBF16: Bool { if case .bf16 = storage { return true } else { return false } }
    public var isTrainable: Bool { gradPointer != nil }
    /// The gradient, for reading (nil when frozen).
    public var gradient: UnsafeMutableBufferPointer<Float>? { gradPointer.map { .init(start: $0, count: count) } }

    /// fp32 copies of rows [row, row+count) of a 2-D tensor (an embedding lookup, for instance).
    public func copyRows(_ row: Int, _ rows: Int, into dst: UnsafeMutablePointer<Float>) {
        weight.widenRows(row, rows, cols: shape.count > 1 ? shape[1...].reduce(1, *) : 1, into: dst)
    }

    /// Moves values into owned fp32 memory (weights that train must be writable, and fp32) and adds a
    /// zeroed gradient of its own (tools and tests; the trainer binds arena views with `bindTrainable`).
    /// A buffer (DeepSeek-V3's selection bias) never trains: nothing happens.
    public func makeTrainable() {
        guard !id.isBuffer else { return }
        makeOwnedF32()
        if gradPointer == nil { let g = FloatBuffer(count: count); gradPointer = g.pointer; gradOwner = g }
    }

    /// Makes this parameter train in memory it does not own: its current values are copied (widened from
    /// bf16 if need be) into `value`, and `grad` is zeroed; both hold `count` floats kept alive by `owner`.
    public func bindTrainable(value: UnsafeMutablePointer<Float>, grad: UnsafeMutablePointer<Float>, owner arena: AnyObject) {
        weight.widenRows(0, 1, cols: count, into: value)
        grad.update(repeating: 0, count: count)
        storage = .f32(value); owner = arena; ownsValue = true
        gradPointer = grad; gradOwner = arena
    }

    /// Copies (and widens) mapped values into owned fp32 memory.
    public func makeOwnedF32() {
        guard !ownsValue || isBF16 else { return }
        let b = FloatBuffer(count: count, zeroed: false)
        weight.widenRows(0, 1, cols: count, into: b.pointer)
        storage = .f32(b.pointer); owner = b; ownsValue = true
    }

    public func zeroGrad() { gradPointer?.update(repeating: 0, count: count) }

    /// Bytes of the stored values (2 per element for bf16, 4 for fp32).
    public var storedBytes: Int { isBF16 ? 2 * count : 4 * count }
}

/// The model's parameters by identity, in a stable order (HF's module order).
public final class ParameterSet {
    /// Whose names the tensors carry (for lookups by name and messages about missing tensors).
    public let family: ModelFamily
    public private(set) var ordered: [Parameter] = []
    private var byID: [ParameterID: Parameter] = [:]

    public init(family: ModelFamily, _ parameters: [Parameter] = []) { self.family = family; for p in parameters { add(p) } }

    public func add(_ p: Parameter) {
        // Invariant: sets are built from a config's parameter specs, one per identity (file names are mapped to
        // identities and duplicates refused when a checkpoint is read).
        precondition(byID[p.id] == nil, "duplicate parameter \(p.name)")
        ordered.append(p); byID[p.id] = p
    }

    public subscript(id: ParameterID) -> Parameter? { byID[id] }
    /// Lookup by the family's tensor name (tests and user-given names).
    public subscript(name: String) -> Parameter? { family.parameterID(named: name).flatMap { byID[$0] } }

    public func require(_ id: ParameterID, shape: [Int]) throws -> Parameter {
        guard let p = byID[id] else { throw ESFTError("missing tensor '\(family.tensorName(of: id))'") }
        guard p.shape == shape else { throw ESFTError("tensor '\(p.name)' has shape \(p.shape), expected \(shape) from config.json") }
        return p
    }

    public var trainable: [Parameter] { ordered.filter(\.isTrainable) }
    public var names: [String] { ordered.map(\.name) }
}

/// A tensor of a model with its identity, shape and its family's name for it, in module order.
public struct ParameterSpec: Equatable, Sendable {
    public let id: ParameterID
    public let shape: [Int]
    /// `family.tensorName(of: id)`, made once.
    public let name: String
    public init(_ id: ParameterID, _ shape: [Int], family: ModelFamily) {
        self.id = id; self.shape = shape; self.name = family.tensorName(of: id)
    }
    public var count: Int { shape.reduce(1, *) }
}

extension ModelConfig {
    public func parameterSpecs() -> [ParameterSpec] {
        var specs: [ParameterSpec] = []
        func add(_ id: ParameterID, _ s: [Int]) { specs.append(ParameterSpec(id, s, family: family)) }
        let d = hiddenSize
        add(.embedTokens, [vocabSize, d])
        for l in 0..<numLayers {
            for (id, shape) in attention.specs(layer: l, hidden: d) { add(id, shape) }
            if isMoELayer(l) {
                add(.router(layer: l), [nRoutedExperts, d])
                if router.selectionBias { add(.routerBias(layer: l), [nRoutedExperts]) }
                for e in 0..<nRoutedExperts {
                    addMLP(inner: moeIntermediateSize) { .routedExpert($0, layer: l, expert: e) }
                }
                if sharedExperts.width > 0 { addMLP(inner: sharedExperts.width) { .sharedExperts($0, layer: l) } }
                if case .gated = sharedExperts { add(.sharedExpertGate(layer: l), [1, d]) }
            } else {
                addMLP(inner: intermediateSize) { .denseMLP($0, layer: l) }
            }
            add(.inputNorm(layer: l), [d])
            add(.postAttentionNorm(layer: l), [d])
        }
        add(.finalNorm, [d])
        if !tieWordEmbeddings { add(.lmHead, [vocabSize, d]) }
        return specs

        func addMLP(inner: Int, _ id: (ParameterID.Projection) -> ParameterID) {
            for (p, shape) in mlpShapes(inner: inner) { add(id(p), shape) }
        }
    }

    /// Shapes of a gated MLP's projections with `inner` hidden units, in HF's module order.
    public func mlpShapes(inner: Int) -> [(ParameterID.Projection, [Int])] {
        [(.gate, [inner, hiddenSize]), (.up, [inner, hiddenSize]), (.down, [hiddenSize, inner])]
    }
}

/// The shape of a layer's self-attention, by kind: everything that follows from it (its tensors, sizes,
/// FLOPs, saved activations and KV cache) is answered here, so the planner, the FLOP count and the
/// fingerprint ask the shape instead of re-deriving it.
public enum AttentionShape: Equatable, Sendable {
    /// Multi-head latent attention (DeepSeek-V2/V3).
    case mla(MLAShape)
    /// Grouped-query attention (Qwen, OLMoE, Mixtral; kvHeads == heads is plain multi-head attention).
    case gqa(GQAShape)

    public var heads: Int {
        switch self { case .mla(let a): return a.heads; case .gqa(let a): return a.heads }
    }
    /// Dimensions of each head's q·k (the softmax scale is its inverse square root).
    public var scoreDim: Int {
        switch self { case .mla(let a): return a.qkNopeHeadDim + a.qkRopeHeadDim; case .gqa(let a): return a.headDim }
    }
    /// Dimensions of each head that RoPE rotates (the tables' width).
    public var ropeDim: Int {
        switch self { case .mla(let a): return a.qkRopeHeadDim; case .gqa(let a): return a.headDim }
    }
    /// Value dimensions per head.
    public var valueDim: Int {
        switch self { case .mla(let a): return a.vHeadDim; case .gqa(let a): return a.headDim }
    }

    /// One layer's attention tensors and shapes, in module order.
    public func specs(layer l: Int, hidden d: Int) -> [(ParameterID, [Int])] {
        var out: [(ParameterID, [Int])] = []
        func add(_ t: ParameterID.AttentionTensor, _ s: [Int]) { out.append((.attention(t, layer: l), s)) }
        switch self {
        case .mla(let a):
            let h = a.heads
            if let rq = a.qLoraRank {
                add(.qAProj, [rq, d])
                if a.bias { add(.qABias, [rq]) }
                add(.qANorm, [rq])
                add(.qBProj, [h * a.qkHeadDim, rq])
            } else {
                add(.qProj, [h * a.qkHeadDim, d])
            }
            add(.kvAProj, [a.kvLoraRank + a.qkRopeHeadDim, d])
            if a.bias { add(.kvABias, [a.kvLoraRank + a.qkRopeHeadDim]) }
            add(.kvANorm, [a.kvLoraRank])
            add(.kvBProj, [h * (a.qkNopeHeadDim + a.vHeadDim), a.kvLoraRank])
            add(.oProj, [d, h * a.vHeadDim])
            if a.bias { add(.oBias, [d]) }
        case .gqa(let a):
            let q = a.heads * a.headDim, kv = a.kvHeads * a.headDim
            add(.qProj, [q, d]); if a.qkvBias { add(.qBias, [q]) }
            add(.kProj, [kv, d]); if a.qkvBias { add(.kBias, [kv]) }
            add(.vProj, [kv, d]); if a.qkvBias { add(.vBias, [kv]) }
            add(.oProj, [d, q]); if a.outputBias { add(.oBias, [d]) }
            switch a.qkNorm {
            case .none: break
            case .perHead: add(.qNorm, [a.headDim]); add(.kNorm, [a.headDim])
            case .fullWidth: add(.qNorm, [q]); add(.kNorm, [kv])
            }
        }
        return out
    }

    /// One layer's attention parameters (elements), tensors, and its largest tensor, from the fields alone.
    public func sizes(hidden d: Double) -> (parameters: Double, tensors: Double, largest: Double) {
        switch self {
        case .mla(let a):
            let h = Double(a.heads), qOut = h * Double(a.qkHeadDim)
            var p = 0.0, tensors = 4.0, largest = 0.0
            if let rq = a.qLoraRank.map(Double.init) {
                p = rq * d + rq + qOut * rq; tensors += 3
                largest = max(rq * d, qOut * rq)
            } else {
                p = qOut * d; tensors += 1
                largest = qOut * d
            }
            let kvA = Double(a.kvLoraRank + a.qkRopeHeadDim) * d, kvB = h * Double(a.qkNopeHeadDim + a.vHeadDim) * Double(a.kvLoraRank)
            let o = d * h * Double(a.vHeadDim)
            p += kvA + Double(a.kvLoraRank) + kvB + o
            largest = max(largest, kvA, kvB, o)
            if a.bias {
                p += (a.qLoraRank.map(Double.init) ?? 0) + Double(a.kvLoraRank + a.qkRopeHeadDim) + d
                tensors += a.qLoraRank == nil ? 2 : 3
            }
            return (p, tensors, largest)
        case .gqa(let a):
            let q = Double(a.heads * a.headDim), kv = Double(a.kvHeads * a.headDim)
            var p = 2 * q * d + 2 * kv * d, tensors = 4.0
            if a.qkvBias { p += q + 2 * kv; tensors += 3 }
            if a.outputBias { p += d; tensors += 1 }
            switch a.qkNorm {
            case .none: break
            case .perHead: p += 2 * Double(a.headDim); tensors += 2
            case .fullWidth: p += q + kv; tensors += 2
            }
            return (p, tensors, max(q, kv) * d)
        }
    }

    /// The projections of one layer for StepFLOPs, in forward order: in and out widths, the weight, and whether
    /// it reads the layer's normed input (its ∂input is needed only when that input needs a gradient).
    public func projections(hidden d: Double) -> [(inDim: Double, outDim: Double, tensor: ParameterID.AttentionTensor, first: Bool)] {
        switch self {
        case .mla(let a):
            let h = Double(a.heads), dqk = Double(a.qkHeadDim), dr = Double(a.qkRopeHeadDim), dv = Double(a.vHeadDim)
            let rkv = Double(a.kvLoraRank)
            var p: [(Double, Double, ParameterID.AttentionTensor, Bool)] = []
            if let rq = a.qLoraRank { p += [(d, Double(rq), .qAProj, true), (Double(rq), h * dqk, .qBProj, false)] } else { p.append((d, h * dqk, .qProj, true)) }
            p += [(d, rkv + dr, .kvAProj, true), (rkv, h * (dqk - dr + dv), .kvBProj, false), (h * dv, d, .oProj, false)]
            return p.map { (inDim: $0.0, outDim: $0.1, tensor: $0.2, first: $0.3) }
        case .gqa(let a):
            let q = Double(a.heads * a.headDim), kv = Double(a.kvHeads * a.headDim)
            let p: [(Double, Double, ParameterID.AttentionTensor, Bool)] = [(d, q, .qProj, true), (d, kv, .kProj, true), (d, kv, .vProj, true), (q, d, .oProj, false)]
            return p.map { (inDim: $0.0, outDim: $0.1, tensor: $0.2, first: $0.3) }
        }
    }

    /// FLOPs of the attention core per visible (query, key) pair: QKᵀ and PV over every head.
    public var coreFLOPsPerPair: Double {
        switch self {
        case .mla(let a): return 2 * Double(a.heads) * Double(a.qkHeadDim + a.vHeadDim)
        case .gqa(let a): return 2 * Double(a.heads) * Double(2 * a.headDim)
        }
    }

    /// Bytes attention keeps for backward over n tokens (`b` rounds a buffer's element count to its bytes),
    /// as the engine's `AttentionSaved` holds them.
    public func savedBytes(tokens nn: Double, _ b: (Double) -> Double) -> Double {
        switch self {
        case .mla(let a):
            let w = a.widths, rq = Double(a.qLoraRank ?? 0)
            return b(nn * Double(w.ldq)) + (a.qLoraRank != nil ? 2 * b(nn * rq) + b(nn) : 0) + b(nn * Double(w.ldc)) + b(nn * Double(w.rkv))
                + b(nn) + b(nn * Double(w.ldkv)) + b(nn * Double(w.dr)) + b(nn * Double(w.ldo)) + b(nn * Double(w.h))
        case .gqa(let a):
            // q and o [N, H·D], k and v [N, Hkv·D] (q and k rotated), lse [N, H]; with q/k norms also their inputs
            // and rstd (per head, or per row for the full-width norm).
            let h = Double(a.heads), hk = Double(a.kvHeads), q = h * Double(a.headDim), kv = hk * Double(a.headDim)
            var s = 2 * b(nn * q) + 2 * b(nn * kv) + b(nn * h)
            switch a.qkNorm {
            case .none: break
            case .perHead: s += b(nn * q) + b(nn * kv) + b(nn * h) + b(nn * hk)
            case .fullWidth: s += b(nn * q) + b(nn * kv) + 2 * b(nn)
            }
            return s
        }
    }

    /// Bytes of attention's backward temporaries over n tokens (beyond the T×T score buffers).
    public func backwardWorkspaceBytes(tokens nn: Double, _ b: (Double) -> Double) -> Double {
        switch self {
        case .mla(let a):
            let w = a.widths, rq = Double(a.qLoraRank ?? 0)
            return b(nn * Double(w.ldo)) + b(nn * Double(w.ldq)) + b(nn * Double(w.ldkv)) + b(nn * Double(w.dr)) + b(nn * Double(w.ldc))
                + b(nn * Double(w.rkv)) + (a.qLoraRank != nil ? 2 * b(nn * rq) : 0)
        case .gqa(let a):
            let q = Double(a.heads * a.headDim), kv = Double(a.kvHeads * a.headDim)
            return b(nn * q) + b(nn * q) + 2 * b(nn * kv) + (a.qkNorm == .none ? 0 : b(nn * q) + b(nn * kv))
        }
    }
}

/// MLA: q from x (or through a low-rank q_a → norm → q_b), a latent c = kv_a(x) with one shared rope key,
/// keys and values decompressed by kv_b(RMSNorm(c)).
public struct MLAShape: Equatable, Sendable {
    public var heads: Int
    public var qLoraRank: Int?
    public var kvLoraRank: Int
    public var qkNopeHeadDim: Int
    public var qkRopeHeadDim: Int
    public var vHeadDim: Int
    /// Biases on q_a, kv_a and o (DeepSeek's attention_bias).
    public var bias: Bool
    /// RoPE on interleaved pairs (DeepSeek-V2; V3's rope_interleave, the default) or rotate-half pairs.
    public var ropeInterleaved: Bool = true
    public var qkHeadDim: Int { qkNopeHeadDim + qkRopeHeadDim }

    /// Heads, per-head widths, the latent rank, and the row widths of q [H·(nope+rope)], the decompressed keys and
    /// values [H·(nope+v)], the attention output [H·v] and kv_a's output [rank + rope]: what `MLAttention` lays out.
    var widths: (h: Int, dn: Int, dr: Int, dv: Int, dqk: Int, rkv: Int, ldq: Int, ldkv: Int, ldo: Int, ldc: Int) {
        let h = heads, dn = qkNopeHeadDim, dr = qkRopeHeadDim, dv = vHeadDim
        return (h, dn, dr, dv, dn + dr, kvLoraRank, h * (dn + dr), h * (dn + dv), h * dv, kvLoraRank + dr)
    }
}

/// GQA: q, k, v projections with `kvHeads` key/value heads shared by groups of heads/kvHeads query heads.
public struct GQAShape: Equatable, Sendable {
    /// RMSNorm on queries and keys before RoPE: none, over each head (Qwen3), or over the whole projection (OLMoE).
    public enum QKNorm: String, Equatable, Sendable { case none, perHead = "per_head", fullWidth = "full_width" }
    public var heads: Int
    public var kvHeads: Int
    public var headDim: Int
    public var qkvBias: Bool
    public var outputBias: Bool
    public var qkNorm: QKNorm
}

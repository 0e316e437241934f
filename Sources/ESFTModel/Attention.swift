import ESFTKernels
import Foundation

/// A decoder layer's self-attention, one case per kind: each owns its forward and backward, its decoding
/// with a KV cache and its tensors (shapes, sizes and FLOPs are its config-level `AttentionShape`'s).
enum Attention {
    case mla(MLAttention)
    case gqa(GQAttention)

    init(_ p: ParameterSet, layer: Int, config c: ModelConfig) throws {
        switch c.attention {
        case .mla(let a): self = .mla(try MLAttention(p, layer: layer, shape: a, hidden: c.hiddenSize))
        case .gqa(let a): self = .gqa(try GQAttention(p, layer: layer, shape: a, hidden: c.hiddenSize, eps: c.rmsNormEps))
        }
    }

    /// Whether backward must compute weight gradients here.
    var hasTrainable: Bool {
        switch self { case .mla(let m): return m.hasTrainable; case .gqa(let g): return g.hasTrainable }
    }

    /// x_ND is the normed layer input; out_ND is written.
    func forward(x: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>, batch: Int, seqLen: Int,
                 rope: RopeTables, saved: AttentionSaved, scratch: AttentionScratch) {
        switch self {
        case .mla(let m): m.forward(x: x, out: out, batch: batch, seqLen: seqLen, rope: rope, saved: saved, scratch: scratch)
        case .gqa(let g): g.forward(x: x, out: out, batch: batch, seqLen: seqLen, rope: rope, saved: saved, scratch: scratch)
        }
    }

    /// dOut_ND is ∂L/∂out; dx_ND, when given, is written (not accumulated) with ∂L/∂x.
    func backward(dOut: UnsafePointer<Float>, x: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>?,
                  batch: Int, seqLen: Int, rope: RopeTables, saved: AttentionSaved, scratch: AttentionScratch) {
        switch self {
        case .mla(let m): m.backward(dOut: dOut, x: x, dx: dx, batch: batch, seqLen: seqLen, rope: rope, saved: saved, scratch: scratch)
        case .gqa(let g): g.backward(dOut: dOut, x: x, dx: dx, batch: batch, seqLen: seqLen, rope: rope, saved: saved, scratch: scratch)
        }
    }

    /// New tokens attend over the cache and join it (see `MLAttention.decode`).
    func decode(x: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>, rows: Int, spans: [DecodeSpan],
                cache: LayerKVCache, rope: RopeTables, saved: AttentionSaved, scratch: AttentionScratch) {
        switch self {
        case .mla(let m): m.decode(x: x, out: out, rows: rows, spans: spans, cache: cache, rope: rope, saved: saved, scratch: scratch)
        case .gqa(let g): g.decode(x: x, out: out, rows: rows, spans: spans, cache: cache, rope: rope, saved: saved, scratch: scratch)
        }
    }

    func makeCache(slots: Int, capacity: Int) -> LayerKVCache {
        switch self {
        case .mla(let m): return m.makeCache(slots: slots, capacity: capacity)
        case .gqa(let g): return g.makeCache(slots: slots, capacity: capacity)
        }
    }

    /// Rows per causal block: row block [r0, r0+rows) only sees keys [0, r0+rows), so the masked upper
    /// triangle is (mostly) never computed: about half the attention FLOPs at long sequences.
    nonisolated(unsafe) static var causalBlockRows = 256

    static func causalBlocks(_ t: Int) -> [(Int, Int)] {
        stride(from: 0, to: t, by: causalBlockRows).map { ($0, min(causalBlockRows, t - $0)) }
    }

    /// The keys row `row`'s block computes with, [0, end): its block's products read P and dS no further,
    /// so the masked zeros are written up to there only (not to T: at T = 4096, a sixteenth of the writes).
    @inline(__always)
    static func blockEnd(row: Int, t: Int) -> Int { min(t, (row / causalBlockRows + 1) * causalBlockRows) }

    /// In place: row i becomes softmax(scale·S[i, 0...i]) with zeros after i; saves lse[i] of scale·S.
    static func causalSoftmax(_ s: UnsafeMutablePointer<Float>, t: Int, scale: Float, lse: UnsafeMutablePointer<Float>) {
        parallelChunks(t, grain: 64) { range in
            for i in range {
                let row = s + i * t
                var m = -Float.infinity
                for j in 0...i { row[j] *= scale; m = max(m, row[j]) }
                var sum: Float = 0
                for j in 0...i { let e = expf(row[j] - m); row[j] = e; sum += e }
                let inv = 1 / sum
                for j in 0...i { row[j] *= inv }
                let end = blockEnd(row: i, t: t)
                if i + 1 < end { (row + i + 1).update(repeating: 0, count: end - i - 1) }
                lse[i] = m + logf(sum)
            }
        }
    }

    /// Backward's recomputation, in place: the scores S (rows of t) become P = exp(scale·S − lse) on the causal
    /// part, zeros after it within each row's block; rowDot[i] = Σ_j P_ij dP_ij = dO_i · o_i (`width` values,
    /// rows `ld` apart).
    static func probabilitiesFromLSE(_ p: UnsafeMutablePointer<Float>, t: Int, scale: Float, lse: UnsafePointer<Float>,
                                     dO: UnsafePointer<Float>, o: UnsafePointer<Float>, width: Int, ld: Int,
                                     rowDot: UnsafeMutablePointer<Float>) {
        parallelChunks(t, grain: 64) { range in
            for i in range {
                let row = p + i * t
                for j in 0...i { row[j] = expf(row[j] * scale - lse[i]) }
                let end = blockEnd(row: i, t: t)
                if i + 1 < end { (row + i + 1).update(repeating: 0, count: end - i - 1) }
                rowDot[i] = dot(width, dO + i * ld, o + i * ld)
            }
        }
    }

    /// In place: dP becomes dS = P⊙(dP − rowDot)·scale on the causal part, zeros after it within the row's block.
    static func scoreGradient(p: UnsafePointer<Float>, dp: UnsafeMutablePointer<Float>, t: Int, scale: Float,
                              rowDot: UnsafePointer<Float>) {
        parallelChunks(t, grain: 64) { range in
            for i in range {
                let pr = p + i * t, dr = dp + i * t, c = rowDot[i]
                for j in 0...i { dr[j] = pr[j] * (dr[j] - c) * scale }
                let end = blockEnd(row: i, t: t)
                if i + 1 < end { (dr + i + 1).update(repeating: 0, count: end - i - 1) }
            }
        }
    }
}

/// What attention keeps for backward (N rows; Q = H·(nope+rope), R a latent rank, C = kv_lora_rank + rope,
/// KV = H·(nope+v), O = H·v): projections' inputs and outputs, the rotated rope key, each row's log-sum-exp.
final class AttentionSaved: ReusableGroup {
    let q_NQ = Reusable<Float>(), qa_NR = Reusable<Float>(), qaNormed_NR = Reusable<Float>(), qaRstd_N = Reusable<Float>()
    let ckv_NC = Reusable<Float>(), cNormed_NR = Reusable<Float>(), cRstd_N = Reusable<Float>()
    let kv_NKV = Reusable<Float>(), kRope_NR = Reusable<Float>(), o_NO = Reusable<Float>(), lse_NH = Reusable<Float>()
    // GQA (K = Hkv·D): k and v, and the q/k norms' inputs and rstd.
    let k_NK = Reusable<Float>(), v_NK = Reusable<Float>(), qRaw_NQ = Reusable<Float>(), kRaw_NK = Reusable<Float>()
    let qRstd = Reusable<Float>(), kRstd = Reusable<Float>()
}

/// Attention temporaries: one (sequence, head)'s T×T scores (forward) or probabilities (backward), and
/// backward's gradients.
final class AttentionScratch: ReusableGroup {
    let scores_TT = Reusable<Float>(), dScores_TT = Reusable<Float>(), rowDot_T = Reusable<Float>()
    let dO_NO = Reusable<Float>(), dq_NQ = Reusable<Float>(), dkv_NKV = Reusable<Float>(), dkRope_NR = Reusable<Float>()
    let dckv_NC = Reusable<Float>(), dcNormed_NR = Reusable<Float>(), dqaNormed_NR = Reusable<Float>(), dqa_NR = Reusable<Float>()
    let dk_NK = Reusable<Float>(), dv_NK = Reusable<Float>(), dqRaw_NQ = Reusable<Float>(), dkRaw_NK = Reusable<Float>()
}

/// RoPE cos/sin for the current sequence length plus the attention softmax scale.
struct RopeTables {
    let cos: UnsafePointer<Float>
    let sin: UnsafePointer<Float>
    let softmaxScale: Float
}

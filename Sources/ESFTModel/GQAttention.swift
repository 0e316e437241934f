import ESFTKernels
import Foundation

/// Grouped-query attention as Qwen2/Qwen3-MoE, OLMoE and Mixtral define it:
///   q = x·Wqᵀ (+bq) [N, H·D],  k = x·Wkᵀ (+bk), v = x·Wvᵀ (+bv) [N, Hkv·D]
///   optional RMSNorm of q and k (per head over D: Qwen3; over the whole projection: OLMoE), then RoPE
///   (rotate-half pairs (i, i+D/2)) on q and k; query head j attends with key/value head j / (H/Hkv):
///   score = q_j·k_gᵀ·D^-½, causal softmax in fp32, out = P·v_g, then o = out·Woᵀ (+bo).
/// Saved for backward: the rotated q and k, v, the norms' inputs and rstd, out, each row's log-sum-exp;
/// the T×T probabilities are recomputed per (sequence, head) in backward, as for MLA.
struct GQAttention {
    let a: GQAShape
    let hidden: Int
    let eps: Float
    let qProj: Parameter, kProj: Parameter, vProj: Parameter, oProj: Parameter
    let qBias: Parameter?, kBias: Parameter?, vBias: Parameter?, oBias: Parameter?
    let qNorm: Parameter?, kNorm: Parameter?

    init(_ p: ParameterSet, layer l: Int, shape c: GQAShape, hidden d: Int, eps: Float) throws {
        a = c; hidden = d; self.eps = eps
        let q = c.heads * c.headDim, kv = c.kvHeads * c.headDim
        qProj = try p.require(.attention(.qProj, layer: l), shape: [q, d])
        kProj = try p.require(.attention(.kProj, layer: l), shape: [kv, d])
        vProj = try p.require(.attention(.vProj, layer: l), shape: [kv, d])
        oProj = try p.require(.attention(.oProj, layer: l), shape: [d, q])
        qBias = c.qkvBias ? try p.require(.attention(.qBias, layer: l), shape: [q]) : nil
        kBias = c.qkvBias ? try p.require(.attention(.kBias, layer: l), shape: [kv]) : nil
        vBias = c.qkvBias ? try p.require(.attention(.vBias, layer: l), shape: [kv]) : nil
        oBias = c.outputBias ? try p.require(.attention(.oBias, layer: l), shape: [d]) : nil
        switch c.qkNorm {
        case .none: qNorm = nil; kNorm = nil
        case .perHead:
            qNorm = try p.require(.attention(.qNorm, layer: l), shape: [c.headDim])
            kNorm = try p.require(.attention(.kNorm, layer: l), shape: [c.headDim])
        case .fullWidth:
            qNorm = try p.require(.attention(.qNorm, layer: l), shape: [q])
            kNorm = try p.require(.attention(.kNorm, layer: l), shape: [kv])
        }
    }

    var hasTrainable: Bool {
        [qProj, kProj, vProj, oProj, qBias, kBias, vBias, oBias, qNorm, kNorm].contains { $0?.isTrainable == true }
    }

    /// Widths: q and o rows H·D, k and v rows Hkv·D, D, and query heads per key/value head.
    var dims: (h: Int, hkv: Int, dh: Int, ldq: Int, ldkv: Int, group: Int) {
        (a.heads, a.kvHeads, a.headDim, a.heads * a.headDim, a.kvHeads * a.headDim, a.heads / a.kvHeads)
    }

    /// The normed rows and their width for one of q/k: per head (rows·heads rows of D) or the whole projection.
    private func normRows(_ n: Int, heads: Int) -> (rows: Int, dim: Int) {
        a.qkNorm == .perHead ? (n * heads, a.headDim) : (n, heads * a.headDim)
    }

    /// q [N, H·D], k and v [N, Hkv·D] of N rows of the normed input, normed where the shape says so, not yet
    /// rotated; the norms' inputs and rstd are kept in `sv` for backward.
    func project(x: UnsafePointer<Float>, rows n: Int, saved sv: AttentionSaved)
        -> (q: UnsafeMutablePointer<Float>, k: UnsafeMutablePointer<Float>, v: UnsafeMutablePointer<Float>) {
        let d = hidden, k = dims
        let q = sv.q_NQ.reuse(count: n * k.ldq), kk = sv.k_NK.reuse(count: n * k.ldkv), v = sv.v_NK.reuse(count: n * k.ldkv)
        Linear.forward(x: x, weight: vProj.weight, bias: vBias?.value, y: v, n: n, inDim: d, outDim: k.ldkv)
        if let qNorm, let kNorm {
            let qRaw = sv.qRaw_NQ.reuse(count: n * k.ldq), kRaw = sv.kRaw_NK.reuse(count: n * k.ldkv)
            Linear.forward(x: x, weight: qProj.weight, bias: qBias?.value, y: qRaw, n: n, inDim: d, outDim: k.ldq)
            Linear.forward(x: x, weight: kProj.weight, bias: kBias?.value, y: kRaw, n: n, inDim: d, outDim: k.ldkv)
            let qr = normRows(n, heads: k.h), kr = normRows(n, heads: k.hkv)
            RMSNorm.forward(x: qRaw, weight: qNorm.value, eps: eps, y: q, rstd: sv.qRstd.reuse(count: qr.rows), rows: qr.rows, dim: qr.dim)
            RMSNorm.forward(x: kRaw, weight: kNorm.value, eps: eps, y: kk, rstd: sv.kRstd.reuse(count: kr.rows), rows: kr.rows, dim: kr.dim)
        } else {
            Linear.forward(x: x, weight: qProj.weight, bias: qBias?.value, y: q, n: n, inDim: d, outDim: k.ldq)
            Linear.forward(x: x, weight: kProj.weight, bias: kBias?.value, y: kk, n: n, inDim: d, outDim: k.ldkv)
        }
        return (q, kk, v)
    }

    func forward(x: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>, batch b: Int, seqLen t: Int,
                 rope: RopeTables, saved sv: AttentionSaved, scratch: AttentionScratch) {
        let n = b * t, k = dims
        let (q, kk, v) = project(x: x, rows: n, saved: sv)
        RoPE.rotateHalves(q, rows: n * k.h, rowsPerToken: k.h, seqLen: t, dim: k.dh, cos: rope.cos, sin: rope.sin, inverse: false)
        RoPE.rotateHalves(kk, rows: n * k.hkv, rowsPerToken: k.hkv, seqLen: t, dim: k.dh, cos: rope.cos, sin: rope.sin, inverse: false)
        let o = sv.o_NO.reuse(count: n * k.ldq), lse = sv.lse_NH.reuse(count: n * k.h)
        let s = scratch.scores_TT.reuse(count: t * t)
        let blocks = Attention.causalBlocks(t)
        for bi in 0..<b {
            for hi in 0..<k.h {
                let qh = q + bi * t * k.ldq + hi * k.dh, g = hi / k.group
                let kh = kk + bi * t * k.ldkv + g * k.dh, vh = v + bi * t * k.ldkv + g * k.dh
                for (r0, rows) in blocks {
                    sgemm(transB: true, m: rows, n: r0 + rows, k: k.dh, a: qh + r0 * k.ldq, lda: k.ldq, b: kh, ldb: k.ldkv,
                          c: s + r0 * t, ldc: t)
                }
                Attention.causalSoftmax(s, t: t, scale: rope.softmaxScale, lse: lse + (bi * k.h + hi) * t)
                for (r0, rows) in blocks {
                    sgemm(m: rows, n: k.dh, k: r0 + rows, a: s + r0 * t, lda: t, b: vh, ldb: k.ldkv,
                          c: o + (bi * t + r0) * k.ldq + hi * k.dh, ldc: k.ldq)
                }
            }
        }
        Linear.forward(x: o, weight: oProj.weight, bias: oBias?.value, y: out, n: n, inDim: k.ldq, outDim: hidden)
    }

    /// dOut_ND is ∂L/∂out; dx_ND, when given, is written (not accumulated) with ∂L/∂x.
    func backward(dOut: UnsafePointer<Float>, x: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>?,
                  batch b: Int, seqLen t: Int, rope: RopeTables, saved sv: AttentionSaved, scratch ws: AttentionScratch) {
        let n = b * t, d = hidden, k = dims
        let q = sv.q_NQ.reuse(count: n * k.ldq), kk = sv.k_NK.reuse(count: n * k.ldkv), v = sv.v_NK.reuse(count: n * k.ldkv)
        let o = sv.o_NO.reuse(count: n * k.ldq), lse = sv.lse_NH.reuse(count: n * k.h)
        let dO = ws.dO_NO.reuse(count: n * k.ldq)
        Linear.backward(dy: dOut, x: o, weight: oProj.weight, dx: dO, dWeight: oProj.gradPointer,
                        dBias: oBias?.gradPointer, n: n, inDim: k.ldq, outDim: d)

        // dK and dV gather over the query heads of each group: zeroed once, accumulated by every head.
        let dq = ws.dq_NQ.reuse(count: n * k.ldq)
        let dk = ws.dk_NK.reuse(count: n * k.ldkv, zeroed: true), dv = ws.dv_NK.reuse(count: n * k.ldkv, zeroed: true)
        let p = ws.scores_TT.reuse(count: t * t), dp = ws.dScores_TT.reuse(count: t * t), rowDot = ws.rowDot_T.reuse(count: t)
        let blocks = Attention.causalBlocks(t), scale = rope.softmaxScale
        for bi in 0..<b {
            for hi in 0..<k.h {
                let g = hi / k.group
                let qh = q + bi * t * k.ldq + hi * k.dh, kh = kk + bi * t * k.ldkv + g * k.dh, vh = v + bi * t * k.ldkv + g * k.dh
                let dOh = dO + bi * t * k.ldq + hi * k.dh, oh = o + bi * t * k.ldq + hi * k.dh
                let dqh = dq + bi * t * k.ldq + hi * k.dh, dkh = dk + bi * t * k.ldkv + g * k.dh, dvh = dv + bi * t * k.ldkv + g * k.dh
                // Recompute P from the saved log-sum-exp, one causal row block at a time.
                for (r0, rows) in blocks {
                    sgemm(transB: true, m: rows, n: r0 + rows, k: k.dh, a: qh + r0 * k.ldq, lda: k.ldq, b: kh, ldb: k.ldkv,
                          c: p + r0 * t, ldc: t)
                }
                Attention.probabilitiesFromLSE(p, t: t, scale: scale, lse: lse + (bi * k.h + hi) * t, dO: dOh, o: oh,
                                               width: k.dh, ld: k.ldq, rowDot: rowDot)
                // dV += P_blockᵀ·dO_block ; dP_block = dO_block·Vᵀ ; dS = P⊙(dP − rowDot)·scale
                for (r0, rows) in blocks {
                    let cols = r0 + rows
                    sgemm(transA: true, m: cols, n: k.dh, k: rows, a: p + r0 * t, lda: t, b: dOh + r0 * k.ldq, ldb: k.ldq,
                          beta: 1, c: dvh, ldc: k.ldkv)
                    sgemm(transB: true, m: rows, n: cols, k: k.dh, a: dOh + r0 * k.ldq, lda: k.ldq, b: vh, ldb: k.ldkv,
                          c: dp + r0 * t, ldc: t)
                }
                Attention.scoreGradient(p: p, dp: dp, t: t, scale: scale, rowDot: rowDot)
                // dQ = dS·K ; dK += dSᵀ·Q
                for (r0, rows) in blocks {
                    let cols = r0 + rows, ds = dp + r0 * t
                    sgemm(m: rows, n: k.dh, k: cols, a: ds, lda: t, b: kh, ldb: k.ldkv, c: dqh + r0 * k.ldq, ldc: k.ldq)
                    sgemm(transA: true, m: cols, n: k.dh, k: rows, a: ds, lda: t, b: qh + r0 * k.ldq, ldb: k.ldq, beta: 1,
                          c: dkh, ldc: k.ldkv)
                }
            }
        }
        RoPE.rotateHalves(dq, rows: n * k.h, rowsPerToken: k.h, seqLen: t, dim: k.dh, cos: rope.cos, sin: rope.sin, inverse: true)
        RoPE.rotateHalves(dk, rows: n * k.hkv, rowsPerToken: k.hkv, seqLen: t, dim: k.dh, cos: rope.cos, sin: rope.sin, inverse: true)

        // Back through the norms (into ∂ of their inputs), then the three projections.
        var dqIn = dq, dkIn = dk
        if let qNorm, let kNorm {
            let qRaw = sv.qRaw_NQ.reuse(count: n * k.ldq), kRaw = sv.kRaw_NK.reuse(count: n * k.ldkv)
            dqIn = ws.dqRaw_NQ.reuse(count: n * k.ldq); dkIn = ws.dkRaw_NK.reuse(count: n * k.ldkv)
            let qr = normRows(n, heads: k.h), kr = normRows(n, heads: k.hkv)
            RMSNorm.backward(dy: dq, x: qRaw, weight: qNorm.value, rstd: sv.qRstd.reuse(count: qr.rows), dx: dqIn,
                             dWeight: qNorm.gradPointer, rows: qr.rows, dim: qr.dim, accumulate: false)
            RMSNorm.backward(dy: dk, x: kRaw, weight: kNorm.value, rstd: sv.kRstd.reuse(count: kr.rows), dx: dkIn,
                             dWeight: kNorm.gradPointer, rows: kr.rows, dim: kr.dim, accumulate: false)
        }
        Linear.backward(dy: dqIn, x: x, weight: qProj.weight, dx: dx, dWeight: qProj.gradPointer, dBias: qBias?.gradPointer,
                        n: n, inDim: d, outDim: k.ldq)
        Linear.backward(dy: dkIn, x: x, weight: kProj.weight, dx: dx, dWeight: kProj.gradPointer, dBias: kBias?.gradPointer,
                        n: n, inDim: d, outDim: k.ldkv, accumulateDx: true)
        Linear.backward(dy: dv, x: x, weight: vProj.weight, dx: dx, dWeight: vProj.gradPointer, dBias: vBias?.gradPointer,
                        n: n, inDim: d, outDim: k.ldkv, accumulateDx: true)
    }
}

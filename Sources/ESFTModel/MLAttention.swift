import ESFTKernels
import Foundation

/// Multi-head latent attention (MLA) as DeepSeek-V2 defines it.
///   q     = x·Wqᵀ, or q_b(RMSNorm(q_a(x))) when q_lora_rank is set         [N, H·(nope+rope)]
///   ckv   = kv_a(x) = [c (kv_lora_rank) | k_rope (rope dim, one key shared by all heads)]
///   kv    = kv_b(RMSNorm(c))                                             [N, H·(nope+v)]
///   score = (q_nope·k_nopeᵀ + rope(q_rope)·rope(k_rope)ᵀ)·scale, causal softmax in fp32, out = P·v
/// Saved for backward: projections' inputs/outputs and each row's log-sum-exp; the T×T probabilities
/// are recomputed per (sequence, head) in backward, so memory is O(N) per layer, not O(T²).
struct MLAttention {
    let a: MLAShape
    let hidden: Int
    let qProj: Parameter?, qaProj: Parameter?, qaBias: Parameter?, qaNorm: Parameter?, qbProj: Parameter?
    let kvaProj: Parameter, kvaBias: Parameter?, kvaNorm: Parameter, kvbProj: Parameter
    let oProj: Parameter, oBias: Parameter?

    init(_ p: ParameterSet, layer: Int, shape c: MLAShape, hidden d: Int) throws {
        a = c; hidden = d
        let h = c.heads
        if let rq = c.qLoraRank {
            qProj = nil
            qaProj = try p.require(.attention(.qAProj, layer: layer), shape: [rq, d])
            qaBias = c.bias ? try p.require(.attention(.qABias, layer: layer), shape: [rq]) : nil
            qaNorm = try p.require(.attention(.qANorm, layer: layer), shape: [rq])
            qbProj = try p.require(.attention(.qBProj, layer: layer), shape: [h * c.qkHeadDim, rq])
        } else {
            qProj = try p.require(.attention(.qProj, layer: layer), shape: [h * c.qkHeadDim, d])
            qaProj = nil; qaBias = nil; qaNorm = nil; qbProj = nil
        }
        kvaProj = try p.require(.attention(.kvAProj, layer: layer), shape: [c.kvLoraRank + c.qkRopeHeadDim, d])
        kvaBias = c.bias ? try p.require(.attention(.kvABias, layer: layer), shape: [c.kvLoraRank + c.qkRopeHeadDim]) : nil
        kvaNorm = try p.require(.attention(.kvANorm, layer: layer), shape: [c.kvLoraRank])
        kvbProj = try p.require(.attention(.kvBProj, layer: layer), shape: [h * (c.qkNopeHeadDim + c.vHeadDim), c.kvLoraRank])
        oProj = try p.require(.attention(.oProj, layer: layer), shape: [d, h * c.vHeadDim])
        oBias = c.bias ? try p.require(.attention(.oBias, layer: layer), shape: [d]) : nil
    }

    /// MLA's RoPE on the rope part: interleaved pairs (DeepSeek-V2; V3 with rope_interleave, whose de-interleaving
    /// only reorders q and k alike, so the scores are the same) or rotate-half pairs (V3 without).
    func rotateRope(_ x: UnsafeMutablePointer<Float>, rows: Int, stride: Int, rowsPerToken: Int = 1, seqLen: Int, dim: Int,
                    cos: UnsafePointer<Float>, sin: UnsafePointer<Float>, inverse: Bool) {
        if a.ropeInterleaved {
            RoPE.rotate(x, rows: rows, stride: stride, rowsPerToken: rowsPerToken, seqLen: seqLen, dim: dim, cos: cos, sin: sin, inverse: inverse)
        } else {
            RoPE.rotateHalves(x, rows: rows, stride: stride, rowsPerToken: rowsPerToken, seqLen: seqLen, dim: dim, cos: cos, sin: sin, inverse: inverse)
        }
    }

    /// Whether backward must compute weight gradients here.
    var hasTrainable: Bool {
        [qProj, qaProj, qaBias, qaNorm, qbProj, kvaProj, kvaBias, kvaNorm, kvbProj, oProj, oBias].contains { $0?.isTrainable == true }
    }

    var dims: (h: Int, dn: Int, dr: Int, dv: Int, dqk: Int, rkv: Int, ldq: Int, ldkv: Int, ldo: Int, ldc: Int) { a.widths }

    /// x_ND is the normed layer input; out_ND is written.
    func forward(x: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>, batch b: Int, seqLen t: Int,
                 rope: RopeTables, saved sv: AttentionSaved, scratch: AttentionScratch) {
        let n = b * t, d = hidden, k = dims
        let (q, kv, kpe) = project(x: x, rows: n, saved: sv)
        rotateRope(kpe, rows: n, stride: k.dr, seqLen: t, dim: k.dr, cos: rope.cos, sin: rope.sin, inverse: false)
        rotateRope(q + k.dn, rows: n * k.h, stride: k.dqk, rowsPerToken: k.h, seqLen: t, dim: k.dr,
                    cos: rope.cos, sin: rope.sin, inverse: false)
        let o = sv.o_NO.reuse(count: n * k.ldo), lse = sv.lse_NH.reuse(count: n * k.h)
        let s = scratch.scores_TT.reuse(count: t * t)
        let blocks = Attention.causalBlocks(t)
        for bi in 0..<b {
            for hi in 0..<k.h {
                let qn = q + bi * t * k.ldq + hi * k.dqk, kn = kv + bi * t * k.ldkv + hi * (k.dn + k.dv)
                for (r0, rows) in blocks { scores(qn: qn, kn: kn, kr: kpe + bi * t * k.dr, s: s, t: t, row: r0, rows: rows) }
                Attention.causalSoftmax(s, t: t, scale: rope.softmaxScale, lse: lse + (bi * k.h + hi) * t)
                for (r0, rows) in blocks {
                    sgemm(m: rows, n: k.dv, k: r0 + rows, a: s + r0 * t, lda: t, b: kn + k.dn, ldb: k.ldkv,
                          c: o + (bi * t + r0) * k.ldo + hi * k.dv, ldc: k.ldo)
                }
            }
        }
        Linear.forward(x: o, weight: oProj.weight, bias: oBias?.value, y: out, n: n, inDim: k.ldo, outDim: d)
    }

    /// q [N, H·(nope+rope)], kv [N, H·(nope+v)] and the rope key [N, rope] (not yet rotated) of N rows of
    /// the normed input, into the saved buffers; also kv_a's output and the latent norm, for backward.
    func project(x: UnsafePointer<Float>, rows n: Int, saved sv: AttentionSaved)
        -> (q: UnsafeMutablePointer<Float>, kv: UnsafeMutablePointer<Float>, kpe: UnsafeMutablePointer<Float>) {
        let d = hidden, k = dims
        let q = sv.q_NQ.reuse(count: n * k.ldq)
        if let qaProj, let qbProj, let qaNorm, let rq = a.qLoraRank {
            let qa = sv.qa_NR.reuse(count: n * rq), qan = sv.qaNormed_NR.reuse(count: n * rq)
            Linear.forward(x: x, weight: qaProj.weight, bias: qaBias?.value, y: qa, n: n, inDim: d, outDim: rq)
            RMSNorm.forward(x: qa, weight: qaNorm.value, eps: ModelConfig.latentNormEps, y: qan,
                            rstd: sv.qaRstd_N.reuse(count: n), rows: n, dim: rq)
            Linear.forward(x: qan, weight: qbProj.weight, bias: nil, y: q, n: n, inDim: rq, outDim: k.ldq)
        } else if let qProj {
            Linear.forward(x: x, weight: qProj.weight, bias: nil, y: q, n: n, inDim: d, outDim: k.ldq)
        }
        let ckv = sv.ckv_NC.reuse(count: n * k.ldc), cn = sv.cNormed_NR.reuse(count: n * k.rkv)
        Linear.forward(x: x, weight: kvaProj.weight, bias: kvaBias?.value, y: ckv, n: n, inDim: d, outDim: k.ldc)
        RMSNorm.forward(x: ckv, weight: kvaNorm.value, eps: ModelConfig.latentNormEps, y: cn,
                        rstd: sv.cRstd_N.reuse(count: n), rows: n, dim: k.rkv, xStride: k.ldc)
        let kv = sv.kv_NKV.reuse(count: n * k.ldkv)
        Linear.forward(x: cn, weight: kvbProj.weight, bias: nil, y: kv, n: n, inDim: k.rkv, outDim: k.ldkv)
        let kpe = sv.kRope_NR.reuse(count: n * k.dr)
        for r in 0..<n { (kpe + r * k.dr).update(from: ckv + r * k.ldc + k.rkv, count: k.dr) }
        return (q, kv, kpe)
    }

    /// Rows [row, row+rows) of S_TT = q_nope·k_nopeᵀ + q_rope·k_ropeᵀ for one (sequence, head), over the keys
    /// [0, row+rows) those rows may see; q_rope and k_rope already rotated.
    private func scores(qn: UnsafePointer<Float>, kn: UnsafePointer<Float>, kr: UnsafePointer<Float>,
                        s: UnsafeMutablePointer<Float>, t: Int, row: Int, rows: Int) {
        let k = dims, cols = row + rows
        sgemm(transB: true, m: rows, n: cols, k: k.dn, a: qn + row * k.ldq, lda: k.ldq, b: kn, ldb: k.ldkv,
              c: s + row * t, ldc: t)
        sgemm(transB: true, m: rows, n: cols, k: k.dr, a: qn + row * k.ldq + k.dn, lda: k.ldq, b: kr, ldb: k.dr, beta: 1,
              c: s + row * t, ldc: t)
    }

    /// dOut_ND is ∂L/∂out; dx_ND, when given, is written (not accumulated) with ∂L/∂x.
    func backward(dOut: UnsafePointer<Float>, x: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>?,
                  batch b: Int, seqLen t: Int, rope: RopeTables, saved sv: AttentionSaved, scratch ws: AttentionScratch) {
        let n = b * t, d = hidden, k = dims
        let q = sv.q_NQ.reuse(count: n * k.ldq), kv = sv.kv_NKV.reuse(count: n * k.ldkv)
        let kpe = sv.kRope_NR.reuse(count: n * k.dr), o = sv.o_NO.reuse(count: n * k.ldo)
        let lse = sv.lse_NH.reuse(count: n * k.h)
        let dO = ws.dO_NO.reuse(count: n * k.ldo)
        Linear.backward(dy: dOut, x: o, weight: oProj.weight, dx: dO, dWeight: oProj.gradPointer,
                        dBias: oBias?.gradPointer, n: n, inDim: k.ldo, outDim: d)

        let dq = ws.dq_NQ.reuse(count: n * k.ldq), dkv = ws.dkv_NKV.reuse(count: n * k.ldkv)
        let dkpe = ws.dkRope_NR.reuse(count: n * k.dr, zeroed: true)
        let p = ws.scores_TT.reuse(count: t * t), dp = ws.dScores_TT.reuse(count: t * t), rowDot = ws.rowDot_T.reuse(count: t)
        let blocks = Attention.causalBlocks(t)
        for bi in 0..<b {
            for hi in 0..<k.h {
                let qn = q + bi * t * k.ldq + hi * k.dqk, kn = kv + bi * t * k.ldkv + hi * (k.dn + k.dv)
                let kr = kpe + bi * t * k.dr, v = kn + k.dn
                let dOh = dO + bi * t * k.ldo + hi * k.dv, oh = o + bi * t * k.ldo + hi * k.dv
                let dqn = dq + bi * t * k.ldq + hi * k.dqk, dkn = dkv + bi * t * k.ldkv + hi * (k.dn + k.dv)
                // Recompute P from the saved log-sum-exp, one causal row block at a time.
                for (r0, rows) in blocks { scores(qn: qn, kn: kn, kr: kr, s: p, t: t, row: r0, rows: rows) }
                let scale = rope.softmaxScale
                Attention.probabilitiesFromLSE(p, t: t, scale: scale, lse: lse + (bi * k.h + hi) * t, dO: dOh, o: oh,
                                               width: k.dv, ld: k.ldo, rowDot: rowDot)
                for i in 0..<t { (dkn + i * k.ldkv).update(repeating: 0, count: k.dn + k.dv) }  // dK, dV accumulate over blocks
                // dV += P_blockᵀ·dO_block ; dP_block = dO_block·Vᵀ ; dS = P⊙(dP − rowDot)·scale
                for (r0, rows) in blocks {
                    let cols = r0 + rows
                    sgemm(transA: true, m: cols, n: k.dv, k: rows, a: p + r0 * t, lda: t, b: dOh + r0 * k.ldo, ldb: k.ldo,
                          beta: 1, c: dkn + k.dn, ldc: k.ldkv)
                    sgemm(transB: true, m: rows, n: cols, k: k.dv, a: dOh + r0 * k.ldo, lda: k.ldo, b: v, ldb: k.ldkv,
                          c: dp + r0 * t, ldc: t)
                }
                Attention.scoreGradient(p: p, dp: dp, t: t, scale: scale, rowDot: rowDot)
                // dQ = dS·K ; dK += dSᵀ·Q (the rope key is shared by all heads: accumulate over heads too)
                for (r0, rows) in blocks {
                    let cols = r0 + rows, ds = dp + r0 * t
                    sgemm(m: rows, n: k.dn, k: cols, a: ds, lda: t, b: kn, ldb: k.ldkv, c: dqn + r0 * k.ldq, ldc: k.ldq)
                    sgemm(m: rows, n: k.dr, k: cols, a: ds, lda: t, b: kr, ldb: k.dr, c: dqn + r0 * k.ldq + k.dn, ldc: k.ldq)
                    sgemm(transA: true, m: cols, n: k.dn, k: rows, a: ds, lda: t, b: qn + r0 * k.ldq, ldb: k.ldq, beta: 1,
                          c: dkn, ldc: k.ldkv)
                    sgemm(transA: true, m: cols, n: k.dr, k: rows, a: ds, lda: t, b: qn + r0 * k.ldq + k.dn, ldb: k.ldq, beta: 1,
                          c: dkpe + bi * t * k.dr, ldc: k.dr)
                }
            }
        }
        rotateRope(dq + k.dn, rows: n * k.h, stride: k.dqk, rowsPerToken: k.h, seqLen: t, dim: k.dr,
                    cos: rope.cos, sin: rope.sin, inverse: true)
        rotateRope(dkpe, rows: n, stride: k.dr, seqLen: t, dim: k.dr, cos: rope.cos, sin: rope.sin, inverse: true)

        // Back through kv_b, kv_a_layernorm and kv_a (whose output also carried the rope key).
        let ckv = sv.ckv_NC.reuse(count: n * k.ldc), cn = sv.cNormed_NR.reuse(count: n * k.rkv)
        let dckv = ws.dckv_NC.reuse(count: n * k.ldc), dcn = ws.dcNormed_NR.reuse(count: n * k.rkv)
        Linear.backward(dy: dkv, x: cn, weight: kvbProj.weight, dx: dcn, dWeight: kvbProj.gradPointer, dBias: nil,
                        n: n, inDim: k.rkv, outDim: k.ldkv)
        RMSNorm.backward(dy: dcn, x: ckv, weight: kvaNorm.value, rstd: sv.cRstd_N.reuse(count: n), dx: dckv,
                         dWeight: kvaNorm.gradPointer, rows: n, dim: k.rkv, xStride: k.ldc, dxStride: k.ldc,
                         accumulate: false)
        for r in 0..<n { (dckv + r * k.ldc + k.rkv).update(from: dkpe + r * k.dr, count: k.dr) }
        Linear.backward(dy: dckv, x: x, weight: kvaProj.weight, dx: dx, dWeight: kvaProj.gradPointer,
                        dBias: kvaBias?.gradPointer, n: n, inDim: d, outDim: k.ldc)

        if let qaProj, let qbProj, let qaNorm, let rq = a.qLoraRank {
            let qa = sv.qa_NR.reuse(count: n * rq), qan = sv.qaNormed_NR.reuse(count: n * rq)
            let dqan = ws.dqaNormed_NR.reuse(count: n * rq), dqa = ws.dqa_NR.reuse(count: n * rq)
            Linear.backward(dy: dq, x: qan, weight: qbProj.weight, dx: dqan, dWeight: qbProj.gradPointer, dBias: nil,
                            n: n, inDim: rq, outDim: k.ldq)
            RMSNorm.backward(dy: dqan, x: qa, weight: qaNorm.value, rstd: sv.qaRstd_N.reuse(count: n), dx: dqa,
                             dWeight: qaNorm.gradPointer, rows: n, dim: rq, accumulate: false)
            Linear.backward(dy: dqa, x: x, weight: qaProj.weight, dx: dx, dWeight: qaProj.gradPointer,
                            dBias: qaBias?.gradPointer, n: n, inDim: d, outDim: rq, accumulateDx: true)
        } else if let qProj {
            Linear.backward(dy: dq, x: x, weight: qProj.weight, dx: dx, dWeight: qProj.gradPointer, dBias: nil,
                            n: n, inDim: d, outDim: k.ldq, accumulateDx: true)
        }
    }
}

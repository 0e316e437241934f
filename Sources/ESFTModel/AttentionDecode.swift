import ESFTKernels
import Foundation

/// One layer's attention cache for incremental decoding: per sequence slot and position, a row of each of
/// the attention kind's cached streams, laid out as `forward` lays them out for a whole sequence, so the
/// same products read them. MLA caches the decompressed keys/values kv_b(RMSNorm(c)) [H·(nope+v)] (stream 0)
/// and the rotated rope key [rope] (stream 1): caching the latent c instead (7× less for DeepSeek-V2-Lite)
/// would need the absorbed form of attention, and at CPU batch sizes the decompressed cache is the simpler
/// one. GQA caches the rotated keys (stream 0) and the values (stream 1), [Hkv·D] each.
final class LayerKVCache {
    let slots: Int, capacity: Int, widths: [Int]
    let streams: [FloatBuffer]

    init(slots: Int, capacity: Int, widths: [Int]) {
        self.slots = slots; self.capacity = capacity; self.widths = widths
        streams = widths.map { FloatBuffer(count: slots * capacity * $0, zeroed: false) }
    }

    /// Stream `i`'s row for (slot, position); rows of one slot are consecutive.
    func row(_ i: Int, slot: Int, position p: Int) -> UnsafeMutablePointer<Float> {
        streams[i].pointer + (slot * capacity + p) * widths[i]
    }
    var bytes: Int { 4 * streams.reduce(0) { $0 + $1.count } }
}

/// Rows [row, row + count) of a decode call are positions [position, position + count) of cache slot `slot`.
public struct DecodeSpan: Equatable, Sendable {
    public let row: Int, count: Int, slot: Int, position: Int
    public init(row: Int, count: Int, slot: Int, position: Int) {
        self.row = row; self.count = count; self.slot = slot; self.position = position
    }
}

extension MLAttention {
    /// Attention of new tokens over everything cached before them: the projections run once for all rows
    /// of all spans (one GEMM each), the new keys and values are appended to the cache, and each (span,
    /// head) attends over positions [0, position + count) with the causal mask inside the span. The same
    /// arithmetic as `forward` on the whole sequence, whose logits it is tested against.
    func decode(x: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>, rows n: Int, spans: [DecodeSpan],
                cache: LayerKVCache, rope: RopeTables, saved sv: AttentionSaved, scratch: AttentionScratch) {
        let d = hidden, k = dims, half = k.dr / 2
        let (q, kv, kpe) = project(x: x, rows: n, saved: sv)
        let o = sv.o_NO.reuse(count: n * k.ldo)
        let longest = spans.map { $0.position + $0.count }.max() ?? 0
        let s = scratch.scores_TT.reuse(count: (spans.map(\.count).max() ?? 0) * longest)
        for span in spans {
            let r0 = span.row, c = span.count, p = span.position, keys = p + c
            // Rotate at absolute positions p..<p+c: the tables start at position p.
            let cosP = rope.cos + p * half, sinP = rope.sin + p * half
            rotateRope(kpe + r0 * k.dr, rows: c, stride: k.dr, seqLen: c, dim: k.dr, cos: cosP, sin: sinP, inverse: false)
            rotateRope(q + r0 * k.ldq + k.dn, rows: c * k.h, stride: k.dqk, rowsPerToken: k.h, seqLen: c, dim: k.dr,
                        cos: cosP, sin: sinP, inverse: false)
            cache.row(0, slot: span.slot, position: p).update(from: kv + r0 * k.ldkv, count: c * k.ldkv)
            cache.row(1, slot: span.slot, position: p).update(from: kpe + r0 * k.dr, count: c * k.dr)
            let kvAll = cache.row(0, slot: span.slot, position: 0), krAll = cache.row(1, slot: span.slot, position: 0)
            for hi in 0..<k.h {
                let qh = q + r0 * k.ldq + hi * k.dqk, kh = kvAll + hi * (k.dn + k.dv)
                sgemm(transB: true, m: c, n: keys, k: k.dn, a: qh, lda: k.ldq, b: kh, ldb: k.ldkv, c: s, ldc: keys)
                sgemm(transB: true, m: c, n: keys, k: k.dr, a: qh + k.dn, lda: k.ldq, b: krAll, ldb: k.dr, beta: 1, c: s, ldc: keys)
                for i in 0..<c { Self.softmaxRow(s + i * keys, visible: p + i + 1, width: keys, scale: rope.softmaxScale) }
                sgemm(m: c, n: k.dv, k: keys, a: s, lda: keys, b: kh + k.dn, ldb: k.ldkv, c: o + r0 * k.ldo + hi * k.dv, ldc: k.ldo)
            }
        }
        Linear.forward(x: o, weight: oProj.weight, bias: oBias?.value, y: out, n: n, inDim: k.ldo, outDim: d)
    }

    /// row[0..<visible] becomes softmax(scale·row) (fp32, max-subtracted, as `forward`), the rest 0.
    static func softmaxRow(_ row: UnsafeMutablePointer<Float>, visible: Int, width: Int, scale: Float) {
        var m = -Float.infinity
        for j in 0..<visible { row[j] *= scale; m = max(m, row[j]) }
        var sum: Float = 0
        for j in 0..<visible { let e = expf(row[j] - m); row[j] = e; sum += e }
        let inv = 1 / sum
        for j in 0..<visible { row[j] *= inv }
        if visible < width { (row + visible).update(repeating: 0, count: width - visible) }
    }

    func makeCache(slots: Int, capacity: Int) -> LayerKVCache {
        LayerKVCache(slots: slots, capacity: capacity, widths: [dims.ldkv, dims.dr])
    }
}

extension GQAttention {
    /// Attention of new tokens over everything cached before them, as `MLAttention.decode`: one projection
    /// of all rows, the rotated keys and the values appended to the cache, then each (span, head) over
    /// positions [0, position + count) with its group's key/value head.
    func decode(x: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>, rows n: Int, spans: [DecodeSpan],
                cache: LayerKVCache, rope: RopeTables, saved sv: AttentionSaved, scratch: AttentionScratch) {
        let k = dims, half = k.dh / 2
        let (q, kk, v) = project(x: x, rows: n, saved: sv)
        let o = sv.o_NO.reuse(count: n * k.ldq)
        let longest = spans.map { $0.position + $0.count }.max() ?? 0
        let s = scratch.scores_TT.reuse(count: (spans.map(\.count).max() ?? 0) * longest)
        for span in spans {
            let r0 = span.row, c = span.count, p = span.position, keys = p + c
            let cosP = rope.cos + p * half, sinP = rope.sin + p * half
            RoPE.rotateHalves(q + r0 * k.ldq, rows: c * k.h, rowsPerToken: k.h, seqLen: c, dim: k.dh, cos: cosP, sin: sinP, inverse: false)
            RoPE.rotateHalves(kk + r0 * k.ldkv, rows: c * k.hkv, rowsPerToken: k.hkv, seqLen: c, dim: k.dh, cos: cosP, sin: sinP, inverse: false)
            cache.row(0, slot: span.slot, position: p).update(from: kk + r0 * k.ldkv, count: c * k.ldkv)
            cache.row(1, slot: span.slot, position: p).update(from: v + r0 * k.ldkv, count: c * k.ldkv)
            let kAll = cache.row(0, slot: span.slot, position: 0), vAll = cache.row(1, slot: span.slot, position: 0)
            for hi in 0..<k.h {
                let g = hi / k.group
                sgemm(transB: true, m: c, n: keys, k: k.dh, a: q + r0 * k.ldq + hi * k.dh, lda: k.ldq, b: kAll + g * k.dh, ldb: k.ldkv,
                      c: s, ldc: keys)
                for i in 0..<c { MLAttention.softmaxRow(s + i * keys, visible: p + i + 1, width: keys, scale: rope.softmaxScale) }
                sgemm(m: c, n: k.dh, k: keys, a: s, lda: keys, b: vAll + g * k.dh, ldb: k.ldkv, c: o + r0 * k.ldq + hi * k.dh, ldc: k.ldq)
            }
        }
        Linear.forward(x: o, weight: oProj.weight, bias: oBias?.value, y: out, n: n, inDim: k.ldq, outDim: hidden)
    }

    func makeCache(slots: Int, capacity: Int) -> LayerKVCache {
        LayerKVCache(slots: slots, capacity: capacity, widths: [dims.ldkv, dims.ldkv])
    }
}

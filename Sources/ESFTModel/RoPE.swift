import ESFTKernels
import Foundation

/// Rotary position embedding tables for the rotated part of queries and keys (`AttentionShape.ropeDim`:
/// MLA's `qk_rope_head_dim`, a GQA head's `head_dim`). Pair i turns by angle pos·invFreq[i] and is scaled by
/// `attentionFactor` (YaRN's mscale ratio, 1 without YaRN). Which elements pair up depends on the family:
/// DeepSeek's MLA rotates interleaved pairs (x[2i], x[2i+1]) (`rotate`), the GQA families rotate halves
/// (x[i], x[i + dim/2]) (`rotateHalves`).
public struct RoPE {
    public let dim: Int
    public let invFreq: [Float]
    public let attentionFactor: Float
    /// Softmax scale of the attention scores: qk_head_dim^-0.5, times mscale(factor, mscale_all_dim)² under YaRN.
    public let softmaxScale: Float

    public init(config: ModelConfig) {
        let dim = config.attention.ropeDim
        self.dim = dim
        let half = dim / 2
        let base = config.ropeTheta
        // HF computes base ** (arange(0, dim, 2) / dim) in fp32.
        let posFreqs = (0..<half).map { Float(pow(base, Double(2 * $0) / Double(dim))) }
        var scale = 1 / Float(config.attention.scoreDim).squareRoot()
        guard let y = config.yarn else {
            invFreq = posFreqs.map { 1 / $0 }
            attentionFactor = 1
            softmaxScale = scale
            return
        }
        func mscale(_ s: Double, _ m: Double) -> Double { s <= 1 ? 1 : 0.1 * m * log(s) + 1 }
        if let af = y.attentionFactor {
            attentionFactor = Float(af)
        } else if let m = y.mscale, let mAll = y.mscaleAllDim, m != 0, mAll != 0 {
            attentionFactor = Float(mscale(y.factor, m) / mscale(y.factor, mAll))
        } else {
            attentionFactor = Float(mscale(y.factor, 1))
        }
        // DeepSeek's attention (MLA) also scales its softmax by mscale(factor, mscale_all_dim)²; the GQA families do not.
        if case .mla = config.attention, let mAll = y.mscaleAllDim, mAll != 0 {
            let m = Float(mscale(y.factor, mAll))
            scale *= m * m
        }
        softmaxScale = scale
        // Frequencies: interpolate (÷factor) the slow dimensions, keep (extrapolate) the fast ones,
        // with a linear ramp between the correction dimensions found from beta_fast/beta_slow.
        func correctionDim(_ rotations: Double) -> Double {
            Double(dim) * log(Double(y.originalMaxPositionEmbeddings) / (rotations * 2 * Double.pi)) / (2 * log(base))
        }
        var low = correctionDim(y.betaFast), high = correctionDim(y.betaSlow)
        if y.truncate { low = floor(low); high = ceil(high) }
        low = max(low, 0); high = min(high, Double(dim - 1))
        if low == high { high += 0.001 }
        invFreq = (0..<half).map { i in
            let ramp = Float(min(max((Double(i) - low) / (high - low), 0), 1))
            let extrapolationFactor = 1 - ramp
            let extrapolation = 1 / posFreqs[i]
            let interpolation = 1 / (Float(y.factor) * posFreqs[i])
            return interpolation * (1 - extrapolationFactor) + extrapolation * extrapolationFactor
        }
    }

    /// cos/sin tables [T, dim/2] for positions 0..<T, already multiplied by the attention factor.
    public func tables(length: Int) -> (cos: [Float], sin: [Float]) {
        let half = dim / 2
        var c = [Float](repeating: 0, count: length * half), s = c
        for p in 0..<length {
            for i in 0..<half {
                let angle = Float(p) * invFreq[i]
                c[p * half + i] = cosf(angle) * attentionFactor
                s[p * half + i] = sinf(angle) * attentionFactor
            }
        }
        return (c, s)
    }

    /// Rotates `rows` vectors of `dim` floats (`stride` apart, default contiguous) in place with rotate-half pairs (x[i], x[i + dim/2])
    /// (the transpose, for backward, when `inverse`). Row r belongs to token r / rowsPerToken at position
    /// (r / rowsPerToken) % seqLen.
    public static func rotateHalves(_ x: UnsafeMutablePointer<Float>, rows: Int, stride: Int? = nil, rowsPerToken: Int = 1, seqLen: Int,
                                    dim: Int, cos: UnsafePointer<Float>, sin: UnsafePointer<Float>, inverse: Bool) {
        let half = dim / 2
        let sign: Float = inverse ? -1 : 1
        parallelChunks(rows, grain: 256) { range in
            for r in range {
                let v = x + r * (stride ?? dim), p = (r / rowsPerToken) % seqLen
                let c = cos + p * half, s = sin + p * half
                for i in 0..<half {
                    let a = v[i], b = v[i + half], sn = sign * s[i]
                    v[i] = a * c[i] - b * sn
                    v[i + half] = b * c[i] + a * sn
                }
            }
        }
    }

    /// Rotates `rows` vectors of `dim` floats in place (the transpose, for backward, when `inverse`).
    /// Row r sits at x + r*stride and belongs to token r / rowsPerToken at position (r / rowsPerToken) % seqLen.
    public static func rotate(_ x: UnsafeMutablePointer<Float>, rows: Int, stride: Int, rowsPerToken: Int = 1,
                              seqLen: Int, dim: Int, cos: UnsafePointer<Float>, sin: UnsafePointer<Float>,
                              inverse: Bool) {
        let half = dim / 2
        let sign: Float = inverse ? -1 : 1
        for r in 0..<rows {
            let v = x + r * stride, p = (r / rowsPerToken) % seqLen
            let c = cos + p * half, s = sin + p * half
            for i in 0..<half {
                let a = v[2 * i], b = v[2 * i + 1], sn = sign * s[i]
                v[2 * i] = a * c[i] - b * sn
                v[2 * i + 1] = a * sn + b * c[i]
            }
        }
    }
}

import Foundation

// Row-wise kernels with their backward, each pair side by side. Rows are independent, so each
// kernel splits rows across threads; a weight gradient is reduced per thread, then summed.

/// RMSNorm: y = w ⊙ x · rstd, rstd = 1/sqrt(mean(x²) + eps). Saves rstd_N for backward.
public enum RMSNorm {
    public static func forward(x: UnsafePointer<Float>, weight: UnsafePointer<Float>, eps: Float,
                               y: UnsafeMutablePointer<Float>, rstd: UnsafeMutablePointer<Float>?,
                               rows: Int, dim: Int, xStride: Int? = nil) {
        let ldx = xStride ?? dim
        parallelChunks(rows, grain: 32) { range in
            for r in range {
                let xr = x + r * ldx, yr = y + r * dim
                let ms = dot(dim, xr, xr) / Float(dim)
                let s = 1 / (ms + eps).squareRoot()
                rstd?[r] = s
                for i in 0..<dim { yr[i] = weight[i] * (xr[i] * s) }
            }
        }
    }

    /// dx (+)= rstd·(w⊙dy) − x·rstd³·mean(w⊙dy⊙x);  dWeight += Σ_rows dy ⊙ x·rstd.
    public static func backward(dy: UnsafePointer<Float>, x: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                                rstd: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>?,
                                dWeight: UnsafeMutablePointer<Float>?, rows: Int, dim: Int,
                                xStride: Int? = nil, dxStride: Int? = nil, accumulate: Bool) {
        let ldx = xStride ?? dim, lddx = dxStride ?? dim
        if let dx {
            parallelChunks(rows, grain: 32) { range in
                for r in range {
                    let xr = x + r * ldx, dyr = dy + r * dim, dxr = dx + r * lddx
                    let s = rstd[r]
                    var m: Float = 0
                    for i in 0..<dim { m += weight[i] * dyr[i] * xr[i] }
                    let c = m * s * s * s / Float(dim)
                    if accumulate { for i in 0..<dim { dxr[i] += s * weight[i] * dyr[i] - c * xr[i] } }
                    else { for i in 0..<dim { dxr[i] = s * weight[i] * dyr[i] - c * xr[i] } }
                }
            }
        }
        if let dWeight {
            for r in 0..<rows {
                let xr = x + r * ldx, dyr = dy + r * dim, s = rstd[r]
                for i in 0..<dim { dWeight[i] += dyr[i] * xr[i] * s }
            }
        }
    }
}

/// SwiGLU: a = silu(g) ⊙ u, silu(g) = g·σ(g).
public enum SwiGLU {
    public static func forward(gate: UnsafePointer<Float>, up: UnsafePointer<Float>,
                               out: UnsafeMutablePointer<Float>, count: Int) {
        parallelChunks(count, grain: 4096) { range in
            for i in range {
                let g = gate[i]
                out[i] = g / (1 + expf(-g)) * up[i]
            }
        }
    }

    /// From da: dGate = da ⊙ u ⊙ silu'(g), dUp = da ⊙ silu(g). May write dGate/dUp over gate/up's storage
    /// only if the caller no longer needs them (it passes distinct buffers otherwise).
    public static func backward(dOut: UnsafePointer<Float>, gate: UnsafePointer<Float>, up: UnsafePointer<Float>,
                                dGate: UnsafeMutablePointer<Float>, dUp: UnsafeMutablePointer<Float>, count: Int) {
        parallelChunks(count, grain: 4096) { range in
            for i in range {
                let g = gate[i], sig = 1 / (1 + expf(-g)), d = dOut[i]
                let u = up[i]
                dGate[i] = d * u * sig * (1 + g * (1 - sig))
                dUp[i] = d * g * sig
            }
        }
    }
}

/// Softmax over each row (fp32 throughout, as HF computes the router and attention softmax).
public enum Softmax {
    public static func forward(x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>, rows: Int, cols: Int) {
        parallelChunks(rows, grain: 64) { range in
            for r in range {
                let xr = x + r * cols, yr = y + r * cols
                var m = -Float.infinity
                for i in 0..<cols { m = max(m, xr[i]) }
                var s: Float = 0
                for i in 0..<cols { let e = expf(xr[i] - m); yr[i] = e; s += e }
                let inv = 1 / s
                for i in 0..<cols { yr[i] *= inv }
            }
        }
    }

    /// dx = y ⊙ (dy − Σ y⊙dy), written (not accumulated) into dx.
    public static func backward(dy: UnsafePointer<Float>, y: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>,
                                rows: Int, cols: Int) {
        parallelChunks(rows, grain: 64) { range in
            for r in range {
                let yr = y + r * cols, dyr = dy + r * cols, dxr = dx + r * cols
                let s = dot(cols, yr, dyr)
                for i in 0..<cols { dxr[i] = yr[i] * (dyr[i] - s) }
            }
        }
    }
}

/// Token cross-entropy with ignored targets (-100). The loss is Σ −log p[target] / `denominator`
/// (the caller passes the count of counted targets: local for one process, global across ranks).
public enum CrossEntropy {
    public static let ignoreIndex: Int32 = -100

    /// Returns the summed (not yet divided) loss in fp64; writes dlogits = (softmax − onehot)/denominator
    /// for counted rows and 0 for ignored rows, when `dLogits` is given.
    public static func forwardBackward(logits: UnsafePointer<Float>, targets: UnsafePointer<Int32>, rows: Int,
                                       vocab: Int, denominator: Double,
                                       dLogits: UnsafeMutablePointer<Float>?) -> Double {
        withUnsafePointer(to: denominator) { d in
            forwardBackward(logits: logits, targets: targets, rows: rows, vocab: vocab, rowLength: rows, denominators: d,
                            dLogits: dLogits).sum
        }
    }

    /// The same with a denominator per sequence of `rowLength` positions (position r uses
    /// denominators[(rowOffset + r) / rowLength], rowOffset being where these rows start in the batch):
    /// every sequence can weigh the same whatever its count of targets.
    /// Returns the plain sum of the terms and the sum of term/denominator (the loss this batch adds).
    public static func forwardBackward(logits: UnsafePointer<Float>, targets: UnsafePointer<Int32>, rows: Int,
                                       vocab: Int, rowLength: Int, rowOffset: Int = 0, denominators: UnsafePointer<Double>,
                                       dLogits: UnsafeMutablePointer<Float>?) -> (sum: Double, weighted: Double) {
        var partial = [Double](repeating: 0, count: rows)
        partial.withUnsafeMutableBufferPointer { part in
            parallelChunks(rows, grain: 8) { range in
                for r in range {
                    let t = targets[r], lr = logits + r * vocab
                    if t == ignoreIndex {
                        if let dLogits { (dLogits + r * vocab).update(repeating: 0, count: vocab) }
                        continue
                    }
                    var m = -Float.infinity
                    for i in 0..<vocab { m = max(m, lr[i]) }
                    var s: Double = 0
                    for i in 0..<vocab { s += Double(expf(lr[i] - m)) }
                    let lse = Double(m) + log(s)
                    part[r] = lse - Double(lr[Int(t)])
                    if let dLogits {
                        let dr = dLogits + r * vocab
                        let lseF = Float(lse), scale = Float(1 / denominators[(rowOffset + r) / rowLength])
                        for i in 0..<vocab { dr[i] = expf(lr[i] - lseF) * scale }
                        dr[Int(t)] -= scale
                    }
                }
            }
        }
        var sum = 0.0, weighted = 0.0
        for r in 0..<rows {
            sum += partial[r]
            if targets[r] != ignoreIndex { weighted += partial[r] / denominators[(rowOffset + r) / rowLength] }
        }
        return (sum, weighted)
    }
}

import COpenBLAS

/// Row-major single-precision GEMM through the chosen backend (`GEMMLayer.backend`: OpenBLAS by default,
/// or oneDNN's dnnl_sgemm): C = alpha * op(A) * op(B) + beta * C,
/// op(A) is m×k, op(B) is k×n, C is m×n. Leading dimensions are row strides in elements.
@inline(__always)
public func sgemm(transA: Bool = false, transB: Bool = false,
                  m: Int, n: Int, k: Int, alpha: Float = 1,
                  a: UnsafePointer<Float>, lda: Int,
                  b: UnsafePointer<Float>, ldb: Int,
                  beta: Float = 0,
                  c: UnsafeMutablePointer<Float>, ldc: Int) {
    if m == 0 || n == 0 { return }
    if k == 0 {  // BLAS would not touch C with alpha*0; make beta semantics explicit.
        if beta == 0 { for i in 0..<m { (c + i * ldc).update(repeating: 0, count: n) } }
        else if beta != 1 { for i in 0..<m { cblas_sscal(Int32(n), beta, c + i * ldc, 1) } }
        return
    }
    if GEMMLayer.backend == .onednn {
        OneDNN.sgemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda, b: b, ldb: ldb,
                     beta: beta, c: c, ldc: ldc)
        return
    }
    openBLASProduct(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda, b: b, ldb: ldb,
                    beta: beta, c: c, ldc: ldc)
}

/// A product gets one block per this many multiply-adds, up to `Threads.count` blocks (OpenBLAS's own
/// single-thread cut-off, 65536 × 4): below twice this it runs whole, where a hand-off costs more than it saves.
let splitProductMACs = 1 << 18

/// OpenBLAS runs single-threaded (`Threads.set`); the GEMM layer splits a product across `Threads.count`
/// workers itself, as a grid of blocks of C, each a single-threaded `cblas_sgemm`. Every block packs its
/// own rows of op(A) and columns of op(B), so a grid of pr × pc blocks packs op(A) pc times and op(B) pr
/// times: of the grids with the most blocks that fit C, the one that packs least (2 threads: C's rows
/// split when C is taller than wide, else its columns). One thread pool for everything, so no idle
/// OpenBLAS threads spin on the cores that experts run on side by side (`concurrentWorkers`).
private func openBLASProduct(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float,
                             a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                             beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int) {
    let ta = transA ? CblasTrans : CblasNoTrans, tb = transB ? CblasTrans : CblasNoTrans
    let parts = Threads.insideWorkers ? 1 : min(Threads.count, max(1, m * n * k / splitProductMACs))
    var (pr, pc, blocks, packed) = (1, 1, 1, Int.max)
    // Cutting `len` into `parts` pieces of ⌈len/parts⌉ leaves this many non-empty (5 in 4 parts: 3 of 2).
    func nonEmpty(_ len: Int, _ parts: Int) -> Int { let per = (len + parts - 1) / parts; return (len + per - 1) / per }
    for r0 in 1...min(parts, m) {  // the most non-empty blocks, then the least packing
        let r = nonEmpty(m, r0), c = nonEmpty(n, min(parts / r0, n))
        let cost = c * m + r * n  // × k: floats of op(A) and op(B) packed over all blocks
        if r * c > blocks || (r * c == blocks && cost < packed) { (pr, pc, blocks, packed) = (r, c, r * c, cost) }
    }
    guard pr * pc > 1 else {
        cblas_sgemm(CblasRowMajor, ta, tb, Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
        return
    }
    let rowsPer = (m + pr - 1) / pr, colsPer = (n + pc - 1) / pc
    concurrentWorkers(pr * pc) { w in
        let r0 = (w / pc) * rowsPer, c0 = (w % pc) * colsPer
        let rows = min(m - r0, rowsPer), cols = min(n - c0, colsPer)
        guard rows > 0 && cols > 0 else { return }
        cblas_sgemm(CblasRowMajor, ta, tb, Int32(rows), Int32(cols), Int32(k), alpha,
                    a + (transA ? r0 : r0 * lda), Int32(lda), b + (transB ? c0 * ldb : c0), Int32(ldb),
                    beta, c + r0 * ldc + c0, Int32(ldc))
    }
}

/// A linear layer in Hugging Face's convention: weight_OI is [out, in], y = x W^T + b.
/// A bf16 weight is widened one block of output rows at a time (see `Weight`), or, with oneDNN and
/// `--compute bf16`, multiplied as bf16 against the activations rounded to bf16 (fp32 accumulation).
public enum Linear {
    /// y_NO = x_NI · W_OI^T (+ bias_O). `accumulate` adds into y instead of overwriting. `worker`: the
    /// `concurrentWorkers` worker making the call (its own widening scratch), 0 elsewhere.
    public static func forward(x: UnsafePointer<Float>, weight: Weight, bias: UnsafePointer<Float>?,
                               y: UnsafeMutablePointer<Float>, n: Int, inDim: Int, outDim: Int,
                               xStride: Int? = nil, yStride: Int? = nil, accumulate: Bool = false, worker: Int = 0) {
        let ldx = xStride ?? inDim, ldy = yStride ?? outDim, beta: Float = accumulate ? 1 : 0
        switch weight {
        case .f32(let w):
            sgemm(transB: true, m: n, n: outDim, k: inDim, a: x, lda: ldx, b: w, ldb: inDim, beta: beta, c: y, ldc: ldy)
        case .bf16(let w16) where GEMMLayer.bf16Products && n > 0 && inDim > 0 && outDim > 0:
            let xb = BF16Scratch.activations.reuse(count: n * inDim)
            roundToBF16(x, rows: n, cols: inDim, stride: ldx, into: xb)
            // B = W^T: element (i, o) of the [in, out] operand is W_OI[o, i].
            OneDNN.matmulBF16(m: n, n: outDim, k: inDim, a: xb, lda: inDim, b: w16, bRow: 1, bCol: inDim,
                              c: y, ldc: ldy, accumulate: accumulate)
        case .bf16:
            let block = WidenScratch.rowsPerBlock(cols: inDim)
            let w = WidenScratch.pointer(min(block, outDim) * inDim, worker: worker)
            for o in stride(from: 0, to: outDim, by: block) {
                let rows = min(block, outDim - o)
                weight.widenRows(o, rows, cols: inDim, into: w)
                sgemm(transB: true, m: n, n: rows, k: inDim, a: x, lda: ldx, b: w, ldb: inDim, beta: beta, c: y + o, ldc: ldy)
            }
        }
        if let bias { addRowVector(y, bias, rows: n, cols: outDim, stride: ldy) }
    }

    /// Sizes the widening slots of `workers` workers for a bf16 weight of [outDim, inDim] (forward and dx
    /// widen the same blocks), before `concurrentWorkers` starts them: no slot grows after the first step.
    public static func reserveWidening(workers: Int, inDim: Int, outDim: Int) {
        WidenScratch.prepare(workers: workers)
        let floats = min(WidenScratch.rowsPerBlock(cols: inDim), outDim) * inDim
        for w in 0..<workers { _ = WidenScratch.pointer(floats, worker: w) }
    }

    /// Backward of `forward`: dx_NI (+)= dy_NO · W_OI; dW_OI += dy^T · x; db_O += Σ_rows dy.
    /// Pass nil for what is not needed (frozen weight, or no gradient wanted below).
    public static func backward(dy: UnsafePointer<Float>, x: UnsafePointer<Float>, weight: Weight,
                                dx: UnsafeMutablePointer<Float>?, dWeight: UnsafeMutablePointer<Float>?,
                                dBias: UnsafeMutablePointer<Float>?, n: Int, inDim: Int, outDim: Int,
                                xStride: Int? = nil, dyStride: Int? = nil, dxStride: Int? = nil,
                                accumulateDx: Bool = false, worker: Int = 0) {
        let ldy = dyStride ?? outDim, lddx = dxStride ?? inDim
        if let dx {
            switch weight {
            case .f32(let w):
                sgemm(m: n, n: inDim, k: outDim, a: dy, lda: ldy, b: w, ldb: inDim,
                      beta: accumulateDx ? 1 : 0, c: dx, ldc: lddx)
            case .bf16(let w16) where GEMMLayer.bf16Products && n > 0 && inDim > 0 && outDim > 0:
                let dyb = BF16Scratch.activations.reuse(count: n * outDim)
                roundToBF16(dy, rows: n, cols: outDim, stride: ldy, into: dyb)
                OneDNN.matmulBF16(m: n, n: inDim, k: outDim, a: dyb, lda: outDim, b: w16, bRow: inDim, bCol: 1,
                                  c: dx, ldc: lddx, accumulate: accumulateDx)
            case .bf16:
                // dx = Σ over blocks of output rows: dy[:, block] · W[block, :].
                let block = WidenScratch.rowsPerBlock(cols: inDim)
                let w = WidenScratch.pointer(min(block, outDim) * inDim, worker: worker)
                var first = true
                for o in stride(from: 0, to: outDim, by: block) {
                    let rows = min(block, outDim - o)
                    weight.widenRows(o, rows, cols: inDim, into: w)
                    sgemm(m: n, n: inDim, k: rows, a: dy + o, lda: ldy, b: w, ldb: inDim,
                          beta: (first && !accumulateDx) ? 0 : 1, c: dx, ldc: lddx)
                    first = false
                }
            }
        }
        if let dWeight {
            sgemm(transA: true, m: outDim, n: inDim, k: n, a: dy, lda: ldy, b: x, ldb: xStride ?? inDim,
                  beta: 1, c: dWeight, ldc: inDim)
        }
        if let dBias { sumRows(dy, rows: n, cols: outDim, stride: ldy, into: dBias) }
    }
}

/// y[r, :] += v for each row.
public func addRowVector(_ y: UnsafeMutablePointer<Float>, _ v: UnsafePointer<Float>, rows: Int, cols: Int, stride: Int) {
    parallelChunks(rows, grain: 64) { range in
        for r in range { cblas_saxpy(Int32(cols), 1, v, 1, y + r * stride, 1) }
    }
}

/// into[c] += Σ_r x[r, c].
public func sumRows(_ x: UnsafePointer<Float>, rows: Int, cols: Int, stride: Int, into: UnsafeMutablePointer<Float>) {
    for r in 0..<rows { cblas_saxpy(Int32(cols), 1, x + r * stride, 1, into, 1) }
}

/// y += alpha * x over `count` contiguous floats.
@inline(__always)
public func axpy(_ count: Int, _ alpha: Float, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>) {
    cblas_saxpy(Int32(count), alpha, x, 1, y, 1)
}

@inline(__always)
public func dot(_ count: Int, _ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>) -> Float {
    cblas_sdot(Int32(count), x, 1, y, 1)
}

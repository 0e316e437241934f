import ESFTKernels

/// A SwiGLU MLP over `n` rows: y = down(silu(gate(x)) ⊙ up(x)). Used for the dense layers, the shared
/// experts, and each routed expert on the rows gathered for it (one GEMM per projection, never per token).
struct SwiGLUWeights {
    let gate: Parameter  // [inner, dim]
    let up: Parameter    // [inner, dim]
    let down: Parameter  // [dim, inner]
    let dim: Int
    let inner: Int

    /// `id` names the projections: a dense MLP's, the shared experts', or one routed expert's.
    init(_ params: ParameterSet, _ id: (ParameterID.Projection) -> ParameterID, dim: Int, inner: Int) throws {
        gate = try params.require(id(.gate), shape: [inner, dim])
        up = try params.require(id(.up), shape: [inner, dim])
        down = try params.require(id(.down), shape: [dim, inner])
        self.dim = dim; self.inner = inner
    }

    var needsWeightGrad: Bool { gate.isTrainable || up.isTrainable || down.isTrainable }

    /// The saved pre-activations for `n` rows: g_NI, u_NI.
    func saved(_ s: SwiGLUSaved, rows n: Int) -> (g: UnsafeMutablePointer<Float>, u: UnsafeMutablePointer<Float>) {
        (s.gate_NI.reuse(count: n * inner), s.up_NI.reuse(count: n * inner))
    }

    /// Saves g_NI and u_NI (pre-activation) for backward; `a_NI` is scratch. y is written, or added to.
    /// `worker`: the `concurrentWorkers` worker running this expert (0 elsewhere).
    func forward(x: UnsafePointer<Float>, n: Int, g: UnsafeMutablePointer<Float>, u: UnsafeMutablePointer<Float>,
                 a: UnsafeMutablePointer<Float>, y: UnsafeMutablePointer<Float>, accumulate: Bool, worker: Int = 0) {
        guard n > 0 else { return }
        Linear.forward(x: x, weight: gate.weight, bias: nil, y: g, n: n, inDim: dim, outDim: inner, worker: worker)
        Linear.forward(x: x, weight: up.weight, bias: nil, y: u, n: n, inDim: dim, outDim: inner, worker: worker)
        SwiGLU.forward(gate: g, up: u, out: a, count: n * inner)
        Linear.forward(x: a, weight: down.weight, bias: nil, y: y, n: n, inDim: inner, outDim: dim, accumulate: accumulate,
                       worker: worker)
    }

    /// dx (+)= ∂L/∂x and weight gradients for trainable projections.
    /// With `rowScale` (routed experts: y was combined as rowScale[r]·y[r]), dy is the *unscaled* upstream
    /// gradient; then dRowScale[r] = dy[r]·y[r] is written and the weight gradients include the scale.
    func backward(dy: UnsafePointer<Float>, x: UnsafePointer<Float>, n: Int,
                  g: UnsafePointer<Float>, u: UnsafePointer<Float>,
                  rowScale: UnsafePointer<Float>? = nil, dRowScale: UnsafeMutablePointer<Float>? = nil,
                  dx: UnsafeMutablePointer<Float>?, accumulateDx: Bool, scratch ws: SwiGLUScratch, worker: Int = 0) {
        guard n > 0 else { return }
        let a = ws.act_NI.reuse(count: n * inner), da = ws.dAct_NI.reuse(count: n * inner)
        let dg = ws.dGate_NI.reuse(count: n * inner), du = ws.dUp_NI.reuse(count: n * inner)
        SwiGLU.forward(gate: g, up: u, out: a, count: n * inner)  // recomputed: cheaper than keeping it
        Linear.backward(dy: dy, x: a, weight: down.weight, dx: da, dWeight: nil, dBias: nil,
                        n: n, inDim: inner, outDim: dim, worker: worker)
        if let rowScale {
            // y[r] = a[r]·Wdᵀ, so ∂L/∂scale[r] = dy[r]·y[r] = (dy[r]·Wd)·a[r] = da[r]·a[r].
            for r in 0..<n {
                dRowScale?[r] = dot(inner, da + r * inner, a + r * inner)
                let s = rowScale[r]
                for j in 0..<inner { da[r * inner + j] *= s; a[r * inner + j] *= s }
            }
        }
        if let dW = down.gradPointer {  // dWd += dyᵀ·(scale⊙a)
            sgemm(transA: true, m: dim, n: inner, k: n, a: dy, lda: dim, b: a, ldb: inner, beta: 1, c: dW, ldc: inner)
        }
        SwiGLU.backward(dOut: da, gate: g, up: u, dGate: dg, dUp: du, count: n * inner)
        Linear.backward(dy: dg, x: x, weight: gate.weight, dx: dx, dWeight: gate.gradPointer, dBias: nil,
                        n: n, inDim: dim, outDim: inner, accumulateDx: accumulateDx, worker: worker)
        Linear.backward(dy: du, x: x, weight: up.weight, dx: dx, dWeight: up.gradPointer, dBias: nil,
                        n: n, inDim: dim, outDim: inner, accumulateDx: true, worker: worker)
    }
}

/// What a SwiGLU keeps for backward: the gate and up pre-activations (the product is recomputed).
final class SwiGLUSaved: ReusableGroup {
    let gate_NI = Reusable<Float>(), up_NI = Reusable<Float>()
}

/// SwiGLU temporaries: the product a = silu(g) ⊙ u (forward and backward) and backward's gradients.
final class SwiGLUScratch: ReusableGroup {
    let act_NI = Reusable<Float>(), dAct_NI = Reusable<Float>(), dGate_NI = Reusable<Float>(), dUp_NI = Reusable<Float>()
}

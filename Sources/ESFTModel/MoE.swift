import ESFTKernels
import Foundation

/// Routing results of one MoE layer for the tokens of a forward pass (for relevance scoring):
/// topkIdx_NK (global expert ids) and topkGate_NK, ESFT's gate score of each chosen expert
/// (docs/esft-method.md §1): a softmax router's probability before renormalisation and scaling; a sigmoid
/// router's weight before routed_scaling_factor.
public struct RoutingView {
    public let layer: Int
    public let tokens: Int
    public let k: Int
    public let experts: Int
    public let topkIdx: UnsafePointer<Int32>
    public let topkGate: UnsafePointer<Float>
}

/// What an MoE layer keeps for backward: the router's outputs (probabilities, chosen experts, their raw
/// probabilities and weights), the shared experts' pre-activations and the dispatch state.
final class MoESaved: ReusableGroup {
    let probs_NE = Reusable<Float>(), topkIdx_NK = Reusable<Int32>(), topkProb_NK = Reusable<Float>()
    let topkWeight_NK = Reusable<Float>()
    /// ESFT's gate scores, kept only while a routing observer watches a sigmoid router.
    let topkGate_NK = Reusable<Float>()
    let shared = SwiGLUSaved()
    /// Qwen2-MoE: sigmoid(shared_expert_gate · x) per row.
    let sharedScale_N = Reusable<Float>()
    let dispatch = DispatchSaved()
}

/// DeepSeek-V2 MoE block with expert parallelism: y = Σ_k w_k · expert_{idx_k}(x) + shared(x).
/// The router and shared experts run where the token lives; the routed experts through the
/// `TokenDispatcher` (one row per (token, owner rank); on one rank the exchange is a copy).
struct MoELayer {
    let router: Router
    let shared: SwiGLUWeights?
    /// Qwen2-MoE's gate of the shared expert ([1, D]): its output is scaled by sigmoid(gate · x) per token.
    let sharedGate: Parameter?
    let dispatcher: TokenDispatcher
    let cfg: ModelConfig
    /// The switch-style balance loss's statistics and gradient, shared by the model's MoE layers (nil: DeepSeek's
    /// sequence-level loss, per layer).
    let balance: SwitchBalance?

    init(_ p: ParameterSet, layer: Int, config c: ModelConfig, placement: ExpertPlacement, exchange: RowExchange,
         counters: DispatchCounters, balance: SwitchBalance?) throws {
        cfg = c; self.balance = balance
        router = Router(weight: try p.require(.router(layer: layer), shape: [c.nRoutedExperts, c.hiddenSize]),
                        bias: c.router.selectionBias ? try p.require(.routerBias(layer: layer), shape: [c.nRoutedExperts]) : nil, cfg: c)
        let mine = placement.layer(layer)
        let experts = try (0..<c.nRoutedExperts).map { e in
            mine.owner(of: e) == exchange.rank ? try SwiGLUWeights(p, { .routedExpert($0, layer: layer, expert: e) }, dim: c.hiddenSize, inner: c.moeIntermediateSize) : nil
        }
        shared = c.sharedExperts.width > 0
            ? try SwiGLUWeights(p, { .sharedExperts($0, layer: layer) }, dim: c.hiddenSize, inner: c.sharedExperts.width)
            : nil
        if case .gated = c.sharedExperts {
            sharedGate = try p.require(.sharedExpertGate(layer: layer), shape: [1, c.hiddenSize])
        } else {
            sharedGate = nil
        }
        dispatcher = TokenDispatcher(layer: layer, dim: c.hiddenSize, k: c.expertsPerToken, inner: c.moeIntermediateSize,
                                     placement: mine, exchange: exchange, experts: experts, counters: counters)
    }

    /// x_ND is the normed input; out_ND is written. Returns the aux loss (0 when alpha is 0).
    func forward(x: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>, batch: Int, seqLen: Int, auxAlpha: Float,
                 auxRows: Int, saved sv: MoESaved, scratch ws: Scratch, observer: ((RoutingView) throws -> Void)?) throws -> Double {
        let n = batch * seqLen, k = cfg.expertsPerToken, e = cfg.nRoutedExperts
        let probs = sv.probs_NE.reuse(count: n * e), topkIdx = sv.topkIdx_NK.reuse(count: n * k)
        let topkProb = sv.topkProb_NK.reuse(count: n * k), topkWeight = sv.topkWeight_NK.reuse(count: n * k)
        // A softmax router's gate score is its raw probability (topkProb itself); a sigmoid router's has its own buffer.
        let topkGate = observer != nil && cfg.router.scoring == .sigmoid ? sv.topkGate_NK.reuse(count: n * k) : nil
        router.forward(x: x, n: n, probs: probs, topkIdx: topkIdx, topkProb: topkProb, topkWeight: topkWeight,
                       topkGate: topkGate, scratch: ws.router)
        try observer?(RoutingView(layer: dispatcher.layer, tokens: n, k: k, experts: e, topkIdx: topkIdx,
                                  topkGate: UnsafePointer(topkGate ?? topkProb)))
        try dispatcher.forward(x: x, tokens: n, topkIdx: topkIdx, topkWeight: topkWeight, out: out, saved: sv.dispatch, scratch: ws)
        if let shared {
            let (g, u) = shared.saved(sv.shared, rows: n), a = ws.swiglu.act_NI.reuse(count: n * shared.inner)
            if let sharedGate {
                let d = cfg.hiddenSize, scale = sv.sharedScale_N.reuse(count: n), y = ws.sharedOut_ND.reuse(count: n * d)
                Linear.forward(x: x, weight: sharedGate.weight, bias: nil, y: scale, n: n, inDim: d, outDim: 1)
                for r in 0..<n { scale[r] = 1 / (1 + expf(-scale[r])) }
                shared.forward(x: x, n: n, g: g, u: u, a: a, y: y, accumulate: false)
                for r in 0..<n { axpy(d, scale[r], y + r * d, out + r * d) }
            } else {
                shared.forward(x: x, n: n, g: g, u: u, a: a, y: out, accumulate: true)
            }
        }
        guard auxAlpha > 0, cfg.balanceLoss != .none else { return 0 }
        if let balance {  // pooled over layers: the model computes it after the last one
            balance.add(probs: probs, topkIdx: topkIdx, tokens: n, k: k)
            return 0
        }
        return router.auxLoss(probs: probs, topkIdx: topkIdx, batch: batch, seqLen: seqLen, rows: auxRows, alpha: auxAlpha, dProbs: nil)
    }

    /// dOut_ND = ∂L/∂out; dx_ND is written with ∂L/∂x (through experts, shared experts and router).
    func backward(dOut: UnsafePointer<Float>, x: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>, batch: Int,
                  seqLen: Int, auxAlpha: Float, auxRows: Int, saved sv: MoESaved, scratch ws: Scratch) throws {
        let n = batch * seqLen, k = cfg.expertsPerToken, e = cfg.nRoutedExperts
        let probs = sv.probs_NE.reuse(count: n * e), topkIdx = sv.topkIdx_NK.reuse(count: n * k)
        let topkProb = sv.topkProb_NK.reuse(count: n * k)
        if let shared, let sharedGate {
            // out += s·shared(x), s = σ(gate·x): the shared expert's backward with row scale s gives ∂L/∂s, then
            // ∂L/∂(gate·x) = ∂L/∂s · s(1 − s) into the gate's weight and dx.
            let (g, u) = shared.saved(sv.shared, rows: n), d = cfg.hiddenSize
            let scale = sv.sharedScale_N.reuse(count: n), dScale = ws.dSharedScale_N.reuse(count: n)
            shared.backward(dy: dOut, x: x, n: n, g: g, u: u, rowScale: scale, dRowScale: dScale, dx: dx, accumulateDx: false,
                            scratch: ws.swiglu)
            for r in 0..<n { dScale[r] *= scale[r] * (1 - scale[r]) }
            Linear.backward(dy: dScale, x: x, weight: sharedGate.weight, dx: dx, dWeight: sharedGate.gradPointer, dBias: nil,
                            n: n, inDim: d, outDim: 1, accumulateDx: true)
        } else if let shared {
            let (g, u) = shared.saved(sv.shared, rows: n)
            shared.backward(dy: dOut, x: x, n: n, g: g, u: u, dx: dx, accumulateDx: false, scratch: ws.swiglu)
        } else {
            dx.update(repeating: 0, count: n * cfg.hiddenSize)
        }
        let dTopk = ws.router.dTopkWeight_NK.reuse(count: n * k)
        dispatcher.recordBackwardRouting(topkIdx: topkIdx, tokens: n)
        try dispatcher.backward(dOut: dOut, tokens: n, dx: dx, dTopkWeight: dTopk, saved: sv.dispatch, scratch: ws)
        let dProbs = ws.router.dProbs_NE.reuse(count: n * e, zeroed: true)
        if cfg.balanceLoss == .none {
            // No balance loss for this family (DeepSeek-V3): the router's gradient is its weights' only.
        } else if auxAlpha > 0, let balance {
            balance.gradient.withUnsafeBufferPointer { g in for t in 0..<n { axpy(e, 1, g.baseAddress!, dProbs + t * e) } }
        } else if auxAlpha > 0 {
            _ = router.auxLoss(probs: probs, topkIdx: topkIdx, batch: batch, seqLen: seqLen, rows: auxRows, alpha: auxAlpha, dProbs: dProbs)
        }
        router.backward(dTopkWeight: dTopk, x: x, n: n, probs: probs, topkIdx: topkIdx, topkProb: topkProb,
                        dProbs: dProbs, dx: dx, scratch: ws.router)
    }
}

import ESFTKernels
import Foundation

/// The MoE gate: fp32 scores over experts (a softmax, or DeepSeek-V3's per-expert sigmoid), greedy or
/// group-limited top-k (V3: chosen on score + selection bias, groups by their two best biased scores),
/// optional renormalisation of the chosen scores (norm_topk_prob), then routed_scaling_factor. Also the
/// DeepSeek sequence-level auxiliary balance loss, which pushes gradient into the softmax probabilities.
struct Router {
    let weight: Parameter  // [E, D]
    /// DeepSeek-V3's selection bias [E] (a buffer: it moves the choice, never the weights, and gets no gradient).
    let bias: Parameter?
    let cfg: ModelConfig

    var experts: Int { cfg.nRoutedExperts }
    var k: Int { cfg.expertsPerToken }

    /// Writes probs_NE (saved), topkIdx_NK, topkProb_NK (the raw chosen probabilities), topkWeight_NK
    /// (what multiplies each expert's output) and, if asked, topkGate_NK: ESFT's gate score of each chosen expert
    /// (docs/esft-method.md §1): a softmax router's raw probability; a sigmoid router's weight before
    /// routed_scaling_factor (the unbiased score, renormalised when norm_topk_prob).
    func forward(x: UnsafePointer<Float>, n: Int, probs: UnsafeMutablePointer<Float>, topkIdx: UnsafeMutablePointer<Int32>,
                 topkProb: UnsafeMutablePointer<Float>, topkWeight: UnsafeMutablePointer<Float>,
                 topkGate: UnsafeMutablePointer<Float>?, scratch: RouterScratch) {
        let e = experts, d = cfg.hiddenSize
        let logits = scratch.logits_NE.reuse(count: n * e)
        Linear.forward(x: x, weight: weight.weight, bias: nil, y: logits, n: n, inDim: d, outDim: e)
        if cfg.router.scoring == .sigmoid {
            parallelChunks(n * e, grain: 4096) { r in for i in r { probs[i] = 1 / (1 + expf(-logits[i])) } }
        } else {
            Softmax.forward(x: logits, y: probs, rows: n, cols: e)
        }
        let k = self.k, cfg = self.cfg, selectionBias = bias?.value
        parallelChunks(n, grain: 64) { range in
            // Per-chunk buffers: nothing is allocated per token.
            var allowed = [Bool](repeating: true, count: e)
            var groups = GroupScratch(cfg)
            var choice = [Float](repeating: 0, count: cfg.router.method == .noauxTC ? e : 0)
            for t in range {
                let p = probs + t * e
                switch cfg.router.method {
                case .greedy:
                    Router.topK(p, count: e, k: k, allowed: allowed, idx: topkIdx + t * k)
                case .groupLimitedGreedy:
                    groups.allowedExperts(p, cfg: cfg, into: &allowed)
                    Router.topK(p, count: e, k: k, allowed: allowed, idx: topkIdx + t * k)
                case .noauxTC:
                    for i in 0..<e { choice[i] = p[i] + (selectionBias?[i] ?? 0) }
                    groups.allowedByBestPairs(choice, cfg: cfg, into: &allowed)
                    choice.withUnsafeBufferPointer { Router.topK($0.baseAddress!, count: e, k: k, allowed: allowed, idx: topkIdx + t * k) }
                }
                var sum: Float = 0
                for j in 0..<k { let v = p[Int(topkIdx[t * k + j])]; topkProb[t * k + j] = v; sum += v }
                let norm: Float = (cfg.router.normalize && k > 1) ? 1 / (sum + 1e-20) : 1
                for j in 0..<k {
                    let unscaled = topkProb[t * k + j] * norm
                    topkWeight[t * k + j] = unscaled * cfg.router.scale
                    topkGate?[t * k + j] = cfg.router.scoring == .sigmoid ? unscaled : topkProb[t * k + j]
                }
            }
        }
    }

    /// The K largest allowed entries, descending; ties go to the lower expert id.
    static func topK(_ p: UnsafePointer<Float>, count e: Int, k: Int, allowed: [Bool], idx: UnsafeMutablePointer<Int32>) {
        var filled = 0
        for i in 0..<e where allowed[i] {
            let v = p[i]
            if filled == k && v <= p[Int(idx[k - 1])] { continue }
            var pos = min(filled, k - 1)
            while pos > 0 && p[Int(idx[pos - 1])] < v { idx[pos] = idx[pos - 1]; pos -= 1 }
            idx[pos] = Int32(i)
            if filled < k { filled += 1 }
        }
    }

    /// DeepSeek's sequence-level balance loss for this layer, for rows of `seqLen` tokens:
    /// α · mean_b Σ_i ce[b,i] · mean_t p[b,t,i], with ce[b,i] = count[b,i] / (T·K/E) held constant. The mean
    /// is over `rows` (the global batch when ranks split it), so ranks' contributions add up.
    /// Returns this batch's share of the loss and, if `dProbs` is given, adds its gradient there.
    func auxLoss(probs: UnsafePointer<Float>, topkIdx: UnsafePointer<Int32>, batch: Int, seqLen t: Int, rows: Int, alpha: Float,
                 dProbs: UnsafeMutablePointer<Float>?) -> Double {
        let e = experts, k = self.k
        var total = 0.0
        var ce = [Float](repeating: 0, count: e)
        for b in 0..<batch {
            for i in 0..<e { ce[i] = 0 }
            for j in 0..<(t * k) { ce[Int(topkIdx[b * t * k + j])] += 1 }
            let norm = Float(e) / Float(t * k)
            for i in 0..<e { ce[i] *= norm }
            var meanP = [Double](repeating: 0, count: e)
            for r in 0..<t { for i in 0..<e { meanP[i] += Double(probs[(b * t + r) * e + i]) } }
            for i in 0..<e { total += Double(ce[i]) * meanP[i] / Double(t) }
            if let dProbs {
                let g = alpha / Float(rows) / Float(t)
                for r in 0..<t { for i in 0..<e { dProbs[(b * t + r) * e + i] += g * ce[i] } }
            }
        }
        return Double(alpha) * total / Double(rows)
    }

    /// From ∂L/∂topkWeight_NK to ∂L/∂probs_NE (added into dProbs, which the caller zeroed or seeded with the aux
    /// gradient), then through the softmax and the gate projection. dx_ND is accumulated.
    func backward(dTopkWeight: UnsafePointer<Float>, x: UnsafePointer<Float>, n: Int, probs: UnsafePointer<Float>,
                  topkIdx: UnsafePointer<Int32>, topkProb: UnsafePointer<Float>, dProbs: UnsafeMutablePointer<Float>,
                  dx: UnsafeMutablePointer<Float>?, scratch: RouterScratch) {
        let e = experts, k = self.k, d = cfg.hiddenSize
        let renorm = cfg.router.normalize && k > 1, scaling = cfg.router.scale
        for t in 0..<n {
            let pk = topkProb + t * k, dw = dTopkWeight + t * k
            if renorm {  // w_j = s·p_j/S  ⇒  ∂L/∂p_m = s·(dw_m/S − Σ_j dw_j p_j / S²)
                var sum: Float = 0, weighted: Float = 0
                for j in 0..<k { sum += pk[j]; weighted += dw[j] * pk[j] }
                sum += 1e-20
                for j in 0..<k { dProbs[t * e + Int(topkIdx[t * k + j])] += scaling * (dw[j] / sum - weighted / (sum * sum)) }
            } else {
                for j in 0..<k { dProbs[t * e + Int(topkIdx[t * k + j])] += scaling * dw[j] }
            }
        }
        let dLogits = scratch.dLogits_NE.reuse(count: n * e)
        if cfg.router.scoring == .sigmoid {  // s = σ(logit): ∂s/∂logit = s(1 − s), expert by expert
            parallelChunks(n * e, grain: 4096) { r in for i in r { dLogits[i] = dProbs[i] * probs[i] * (1 - probs[i]) } }
        } else {
            Softmax.backward(dy: dProbs, y: probs, dx: dLogits, rows: n, cols: e)
        }
        Linear.backward(dy: dLogits, x: x, weight: weight.weight, dx: dx, dWeight: weight.gradPointer, dBias: nil,
                        n: n, inDim: d, outDim: e, accumulateDx: true)
    }
}

/// Router temporaries: the gate's logits, and backward's gradients (∂L/∂topkWeight, ∂L/∂probs, ∂L/∂logits).
final class RouterScratch: ReusableGroup {
    let logits_NE = Reusable<Float>(), dTopkWeight_NK = Reusable<Float>(), dProbs_NE = Reusable<Float>()
    let dLogits_NE = Reusable<Float>()
}

/// Group-limited routing: only the experts of the topk_group best-scoring groups may be chosen. A group's score
/// is its best probability (group_limited_greedy, DeepSeek-V2) or the sum of its two best biased scores
/// (noaux_tc, DeepSeek-V3 as transformers 5.25's DeepseekV3TopkRouter; the other groups' experts count as −∞,
/// so a negative biased score in a kept group still wins over them).
struct GroupScratch {
    var best: [Float]
    var chosen: [Int32]
    let everyGroup: [Bool]

    init(_ cfg: ModelConfig) {
        best = [Float](repeating: 0, count: cfg.router.groups)
        chosen = [Int32](repeating: 0, count: cfg.router.keepGroups)
        everyGroup = [Bool](repeating: true, count: cfg.router.groups)
    }

    mutating func allowedExperts(_ p: UnsafePointer<Float>, cfg: ModelConfig, into allowed: inout [Bool]) {
        let groups = cfg.router.groups, per = cfg.nRoutedExperts / groups
        for g in 0..<groups {
            var m = -Float.infinity
            for j in 0..<per { m = max(m, p[g * per + j]) }
            best[g] = m
        }
        allowBestGroups(cfg, per: per, into: &allowed)
    }

    mutating func allowedByBestPairs(_ choice: [Float], cfg: ModelConfig, into allowed: inout [Bool]) {
        let groups = cfg.router.groups, per = cfg.nRoutedExperts / groups
        for g in 0..<groups {
            var first = -Float.infinity, second = -Float.infinity
            for j in 0..<per {
                let v = choice[g * per + j]
                if v > first { second = first; first = v } else if v > second { second = v }
            }
            best[g] = first + second
        }
        allowBestGroups(cfg, per: per, into: &allowed)
    }

    /// allowed = the experts of the keepGroups groups with the highest `best`.
    private mutating func allowBestGroups(_ cfg: ModelConfig, per: Int, into allowed: inout [Bool]) {
        let k = cfg.router.keepGroups, all = everyGroup, groups = cfg.router.groups
        best.withUnsafeBufferPointer { b in
            chosen.withUnsafeMutableBufferPointer { c in
                Router.topK(b.baseAddress!, count: groups, k: k, allowed: all, idx: c.baseAddress!)
            }
        }
        for i in 0..<allowed.count { allowed[i] = false }
        for g in chosen { for j in 0..<per { allowed[Int(g) * per + j] = true } }
    }
}

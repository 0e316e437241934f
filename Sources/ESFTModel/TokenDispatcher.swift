import ESFTKernels

/// The MoE layer's expert-parallel path, in named phases (docs/training.md, "Dispatch protocol"):
///
///     forward:   plan → exchangeCounts → dispatch → computeExperts → combine
///     backward:                          combineBackward → computeExpertsBackward → dispatchBackward
///
/// Each phase's backward follows its forward below. `plan` and `exchangeCounts` have none: routing is
/// discrete, and backward retraces forward's rows with forward's counts (kept in `DispatchSaved`).
///
/// Source (where a token lives): one row per (token, owner rank), `[x (D) | K weights]` in fp32, and
/// beside it the Int32 side channel of the row's K local expert ids (-1 where the slot's expert lives
/// elsewhere, weight 0 there). Owner (where experts live): rows grouped per local expert, one SwiGLU
/// as three GEMMs per expert over all its rows, never per token; one weighted sum per received row.
/// Shapes: N tokens, S rows sent, M received, A (row, slot) assignments to local experts.
struct TokenDispatcher {
    let layer: Int
    let dim: Int, k: Int, inner: Int
    let placement: LayerPlacement  // this layer's
    let exchange: RowExchange
    let experts: [SwiGLUWeights?]  // by global id; nil where another rank owns the expert
    let counters: DispatchCounters

    private var tag: String { "layer \(layer)" }
    /// This rank's experts (global ids), in local order.
    private var local: [Int] { placement.members[exchange.rank] }
    /// Floats of a dispatched row: x, then one routing weight per slot.
    private var width: Int { dim + k }

    /// out_ND = Σ over each token's K experts of weight · expert(x) (written, not accumulated).
    func forward(x: UnsafePointer<Float>, tokens n: Int, topkIdx: UnsafePointer<Int32>, topkWeight: UnsafePointer<Float>,
                 out: UnsafeMutablePointer<Float>, saved: DispatchSaved, scratch: Scratch) throws {
        let source = plan(topkIdx: topkIdx, tokens: n, saved: saved, scratch: scratch.dispatch)
        try exchangeCounts(source)
        try dispatch(x: x, topkWeight: topkWeight, source, saved: saved, scratch: scratch.dispatch)
        let owner = computeExperts(rows: source.receiveCounts.reduce(0, +), saved: saved, scratch: scratch)
        try combine(owner, source, out: out, scratch: scratch.dispatch)
    }

    /// dx_ND += ∂L/∂x through the routed experts; dTopkWeight_NK = ∂L/∂(each slot's weight) (written).
    func backward(dOut: UnsafePointer<Float>, tokens n: Int, dx: UnsafeMutablePointer<Float>,
                  dTopkWeight: UnsafeMutablePointer<Float>, saved: DispatchSaved, scratch: Scratch) throws {
        let source = SourcePlan(saved, tokens: n, k: k, ranks: exchange.ranks)
        let owner = OwnerPlan(saved, rows: source.receiveCounts.reduce(0, +), k: k, localExperts: local.count)
        try combineBackward(dOut: dOut, source, owner, scratch: scratch.dispatch)
        computeExpertsBackward(owner, saved: saved, scratch: scratch)
        try dispatchBackward(owner, source, dx: dx, dTopkWeight: dTopkWeight, scratch: scratch.dispatch)
    }

    // MARK: plan (source) — no backward

    /// The analytic minimum of backward's rows, from the routing (not from the plan backward retraces).
    func recordBackwardRouting(topkIdx: UnsafePointer<Int32>, tokens n: Int) {
        counters.recordRouting(layer: layer, .backward, topkIdx: topkIdx, tokens: n, k: k, placement: placement, rank: exchange.rank)
    }

    /// One row per (token, owner rank), deduplicated: a token whose K experts live on 2 ranks gets 2 rows.
    /// Writes the rows' expert slots (sendSlots_SK) and records rows vs (token, expert) pairs.
    func plan(topkIdx: UnsafePointer<Int32>, tokens n: Int, saved: DispatchSaved, scratch: DispatchScratch) -> SourcePlan {
        let source = SourcePlan(saved, tokens: n, k: k, ranks: exchange.ranks)
        let rows = source.build(topkIdx: topkIdx, placement: placement, slots: scratch.sendSlots_SK.reuse(count: source.maxRows * k))
        counters.record(layer: layer, rows: rows, pairs: n * k)
        counters.recordRouting(layer: layer, .forward, topkIdx: topkIdx, tokens: n, k: k, placement: placement, rank: exchange.rank)
        return source
    }

    // MARK: exchangeCounts — no backward (backward sends the same rows the other way)

    /// Rows per destination out, rows per source in (kept in the plan).
    func exchangeCounts(_ source: SourcePlan) throws {
        source.store(receiveCounts: try exchange.exchangeCounts(source.sendCounts, tag: "\(tag) forward counts"))
    }

    // MARK: dispatch (source → owners)

    /// Packs [x | weights] per row (weight 0 in a slot owned elsewhere) and sends the rows, then their
    /// Int32 slots, both under one tag: 4·(D+2K) bytes a row, as when ids travelled as floats.
    func dispatch(x: UnsafePointer<Float>, topkWeight: UnsafePointer<Float>, _ source: SourcePlan,
                  saved: DispatchSaved, scratch: DispatchScratch) throws {
        let sendCounts = source.sendCounts, receiveCounts = source.receiveCounts
        let s = sendCounts.reduce(0, +), m = receiveCounts.reduce(0, +), d = dim, k = self.k, w = width
        let send = scratch.send_SW.reuse(count: s * w), slots = scratch.sendSlots_SK.reuse(count: s * k)
        source.gatherTokens(x, dim: d, into: send, stride: w)
        parallelChunks(s, grain: 256) { range in
            for r in range {
                let t = Int(source.rowToken[r])
                for j in 0..<k { send[r * w + d + j] = slots[r * k + j] >= 0 ? topkWeight[t * k + j] : 0 }
            }
        }
        counters.recordSent(layer: layer, .forwardDispatch, rowsTo: sendCounts,
                            rowBytes: MemoryLayout<Float>.stride * w + MemoryLayout<Int32>.stride * k)
        try exchange.exchangeRows(send: send, sendCounts: sendCounts, receive: saved.received_MW.reuse(count: m * w),
                                  receiveCounts: receiveCounts, width: w, tag: "\(tag) forward dispatch")
        try exchange.exchangeRows(send: slots, sendCounts: sendCounts, receive: scratch.receivedSlots_MK.reuse(count: m * k),
                                  receiveCounts: receiveCounts, width: k, tag: "\(tag) forward dispatch")
    }

    /// Owner: [Σ ∂x of each row's assignments | ∂weight per slot] back to the source, which adds ∂x per
    /// token into dx and sums ∂weight per (token, slot) (a slot owned elsewhere carries 0).
    func dispatchBackward(_ owner: OwnerPlan, _ source: SourcePlan, dx: UnsafeMutablePointer<Float>,
                          dTopkWeight: UnsafeMutablePointer<Float>, scratch: DispatchScratch) throws {
        let sendCounts = source.sendCounts, receiveCounts = source.receiveCounts
        let s = sendCounts.reduce(0, +), m = receiveCounts.reduce(0, +), a = owner.assignments, d = dim, w = width
        let dCombined = scratch.dCombined_MW.reuse(count: m * w), dReturned = scratch.dReturned_SW.reuse(count: s * w)
        owner.combineBackward(scratch.dGathered_AD.reuse(count: a * d), dWeights: scratch.dWeight_A.reuse(count: a),
                              into: dCombined, dim: d, k: k)
        counters.recordSent(layer: layer, .backwardCombine, rowsTo: receiveCounts, rowBytes: MemoryLayout<Float>.stride * w)
        try exchange.exchangeRows(send: dCombined, sendCounts: receiveCounts, receive: dReturned, receiveCounts: sendCounts,
                                  width: w, tag: "\(tag) backward combine")
        source.sumRowsPerToken(dReturned, width: w, into: dx, dim: d, accumulate: true)
        source.sumSlotsPerToken(dReturned, width: w, offset: d, into: dTopkWeight)
    }

    // MARK: computeExperts (owner)

    /// Groups the received (row, slot) pairs per local expert (counting sort), gathers their x and runs
    /// each expert's SwiGLU on all its rows at once: expertOut_AD, pre-activations saved.
    func computeExperts(rows m: Int, saved: DispatchSaved, scratch: Scratch) -> OwnerPlan {
        let owner = OwnerPlan(saved, rows: m, k: k, localExperts: local.count), ds = scratch.dispatch
        let received = saved.received_MW.reuse(count: m * width)
        owner.build(slots: ds.receivedSlots_MK.reuse(count: m * k), weights: received + dim, width: width)
        let a = owner.assignments, d = dim
        let xg = ds.gathered_AD.reuse(count: a * d), yg = ds.expertOut_AD.reuse(count: a * d)
        owner.gather(from: received, stride: width, into: xg, dim: d)
        let g = saved.experts.gate_NI.reuse(count: a * inner), u = saved.experts.up_NI.reuse(count: a * inner)
        let act = scratch.swiglu.act_NI.reuse(count: a * inner)
        reserveWidening()
        ExpertWorkers.run(offsets: owner.offsets, localExperts: local.count) { worker, le in
            let lo = Int(owner.offsets[le]), cnt = Int(owner.offsets[le + 1]) - lo
            experts[local[le]]!.forward(x: xg + lo * d, n: cnt, g: g + lo * inner, u: u + lo * inner,
                                        a: act + lo * inner, y: yg + lo * d, accumulate: false, worker: worker)
        }
        return owner
    }

    /// Expert backward per local expert on its gathered rows: weight gradients of trainable experts,
    /// ∂x per assignment (dGathered_AD, through frozen experts too) and ∂weight per assignment (dWeight_A:
    /// the SwiGLU backward folds the row's weight in, see `SwiGLUWeights.backward(rowScale:)`).
    func computeExpertsBackward(_ owner: OwnerPlan, saved: DispatchSaved, scratch: Scratch) {
        let a = owner.assignments, d = dim, ds = scratch.dispatch
        let g = saved.experts.gate_NI.reuse(count: a * inner), u = saved.experts.up_NI.reuse(count: a * inner)
        let xg = ds.gathered_AD.reuse(count: a * d), dyg = ds.dExpertOut_AD.reuse(count: a * d)
        let dxg = ds.dGathered_AD.reuse(count: a * d), dw = ds.dWeight_A.reuse(count: a)
        owner.gather(from: saved.received_MW.reuse(count: owner.rows * width), stride: width, into: xg, dim: d)
        scratch.reserveExpertWorkers(ExpertWorkers.possible(localExperts: local.count), rows: owner.maxExpertRows, inner: inner)
        reserveWidening()
        ExpertWorkers.run(offsets: owner.offsets, localExperts: local.count) { worker, le in
            let lo = Int(owner.offsets[le]), cnt = Int(owner.offsets[le + 1]) - lo
            experts[local[le]]!.backward(dy: dyg + lo * d, x: xg + lo * d, n: cnt, g: g + lo * inner,
                                         u: u + lo * inner, rowScale: owner.weights + lo, dRowScale: dw + lo,
                                         dx: dxg + lo * d, accumulateDx: false, scratch: scratch.expertWorker(worker), worker: worker)
        }
    }

    /// Frozen bf16 experts are widened block by block, by each worker into its own slot: sized up front.
    private func reserveWidening() {
        guard experts.contains(where: { e in e.map { $0.gate.weight.isBF16 || $0.up.weight.isBF16 || $0.down.weight.isBF16 } ?? false })
        else { return }
        let workers = ExpertWorkers.possible(localExperts: local.count)
        Linear.reserveWidening(workers: workers, inDim: dim, outDim: inner)  // gate, up
        Linear.reserveWidening(workers: workers, inDim: inner, outDim: dim)  // down
    }

    // MARK: combine (owners → source)

    /// Owner: each received row's weighted sum of its experts' outputs goes back; source: out[t] = the
    /// sum of t's returned rows.
    func combine(_ owner: OwnerPlan, _ source: SourcePlan, out: UnsafeMutablePointer<Float>, scratch: DispatchScratch) throws {
        let sendCounts = source.sendCounts, receiveCounts = source.receiveCounts
        let s = sendCounts.reduce(0, +), m = owner.rows, d = dim
        let combined = scratch.combined_MD.reuse(count: m * d), returned = scratch.returned_SD.reuse(count: s * d)
        owner.combine(scratch.expertOut_AD.reuse(count: owner.assignments * d), weights: owner.weights, into: combined, dim: d)
        counters.recordSent(layer: layer, .forwardCombine, rowsTo: receiveCounts, rowBytes: MemoryLayout<Float>.stride * d)
        try exchange.exchangeRows(send: combined, sendCounts: receiveCounts, receive: returned, receiveCounts: sendCounts,
                                  width: d, tag: "\(tag) forward combine")
        source.sumRowsPerToken(returned, width: d, into: out, dim: d, accumulate: false)
    }

    /// ∂L/∂(returned row) is ∂L/∂out of its token: to the owners, where each assignment takes its row's
    /// gradient (unscaled: `computeExpertsBackward` applies the weight).
    func combineBackward(dOut: UnsafePointer<Float>, _ source: SourcePlan, _ owner: OwnerPlan, scratch: DispatchScratch) throws {
        let sendCounts = source.sendCounts, receiveCounts = source.receiveCounts
        let s = sendCounts.reduce(0, +), m = owner.rows, d = dim
        let dSend = scratch.dSend_SD.reuse(count: s * d), dReceived = scratch.dReceived_MD.reuse(count: m * d)
        source.gatherTokens(dOut, dim: d, into: dSend)
        counters.recordSent(layer: layer, .backwardDispatch, rowsTo: sendCounts, rowBytes: MemoryLayout<Float>.stride * d)
        try exchange.exchangeRows(send: dSend, sendCounts: sendCounts, receive: dReceived, receiveCounts: receiveCounts,
                                  width: d, tag: "\(tag) backward dispatch")
        owner.gather(from: dReceived, stride: d, into: scratch.dExpertOut_AD.reuse(count: owner.assignments * d), dim: d)
    }
}

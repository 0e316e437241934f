@testable import ESFTModel
import ESFTKernels
import XCTest

/// The TokenDispatcher's phases on one process: the plan's deduplication on a hand-made routing, the
/// dispatch → compute → combine round trip against a dense per-token float64 reference, and backward
/// against that reference and finite differences. Bounds are fp32 rounding bounds, derived at each use.
final class TokenDispatcherTests: XCTestCase {
    let u = DispatchFixture.u

    /// Rank 0 of 3 ranks, 6 experts (ranks own 0–1, 2–3, 4–5), K = 3: one row per (token, owner rank).
    func testPlanSendsOneRowPerTokenAndOwnerRank() {
        let topk: [Int32] = [0, 1, 2,   // ranks 0, 1
                             4, 5, 3,   // ranks 2, 1
                             0, 2, 4,   // ranks 0, 1, 2
                             1, 0, 5,   // ranks 0, 2
                             3, 2, 1]   // ranks 1, 0
        let counters = DispatchCounters()
        let t = TokenDispatcher(layer: 2, dim: 4, k: 3, inner: 2, placement: .contiguous(experts: 6, ranks: 3),
                                exchange: PlanOnlyExchange(), experts: [SwiGLUWeights?](repeating: nil, count: 6), counters: counters)
        let saved = DispatchSaved(), scratch = DispatchScratch()
        let plan = topk.withUnsafeBufferPointer { t.plan(topkIdx: $0.baseAddress!, tokens: 5, saved: saved, scratch: scratch) }

        XCTAssertEqual(plan.sendCounts, [4, 4, 3], "rows per destination rank")
        XCTAssertEqual(counters.rowsSent[2], 11, "11 rows for 15 (token, expert) pairs")
        XCTAssertEqual(counters.pairs[2], 15)
        // The analytic minimum, from the routing alone: tokens 0, 1, 2, 4 need rank 1, tokens 1, 2, 3 rank 2;
        // 9 of the 15 slots name an expert off rank 0 (1 + 3 + 2 + 1 + 2).
        XCTAssertEqual(counters.minimumRows(layer: 2, .forward), [0, 4, 3])
        XCTAssertEqual(counters.minimumRows(layer: 2, .backward), [0, 0, 0], "no backward ran")
        XCTAssertEqual(counters.pairsOffRank(layer: 2), 9)
        // Grouped by destination, in token order within a group.
        XCTAssertEqual((0..<11).map { plan.rowToken[$0] }, [0, 2, 3, 4,  0, 1, 2, 4,  1, 2, 3])
        // Each token's rows, in the order its slots first name a rank.
        let rowsOf = (0..<5).map { t in (Int(plan.tokenRowStart[t])..<Int(plan.tokenRowStart[t + 1])).map { Int(plan.tokenRows[$0]) } }
        XCTAssertEqual(rowsOf, [[0, 4], [8, 5], [1, 6, 9], [2, 10], [7, 3]])
        // Slots: the local id on the row's rank, -1 where another rank owns the slot's expert.
        let slots = scratch.sendSlots_SK.reuse(count: 33)
        let rowSlots = (0..<11).map { r in (0..<3).map { slots[r * 3 + $0] } }
        XCTAssertEqual(rowSlots, [[0, 1, -1], [0, -1, -1], [1, 0, -1], [-1, -1, 1],    // rank 0: tokens 0, 2, 3, 4
                                  [-1, -1, 0], [-1, -1, 1], [-1, 0, -1], [1, 0, -1],   // rank 1: tokens 0, 1, 2, 4
                                  [0, 1, -1], [-1, -1, 0], [-1, -1, 1]])               // rank 2: tokens 1, 2, 3
        XCTAssertEqual(rowSlots.joined().filter { $0 >= 0 }.count, 15, "every (token, expert) pair in exactly one row")
    }

    /// Forward on one rank equals Σ_j w_j·expert_j(x) per token in float64, within the fp32 bound
    /// `DispatchFixture.reference` derives; the exchanges are the protocol's, with ids as Int32.
    func testRoundTripEqualsDensePerTokenReference() throws {
        let f = DispatchFixture()
        let exchange = RecordingExchange(), counters = DispatchCounters()
        let t = f.dispatcher(exchange, counters: counters)
        var out = [Float](repeating: .nan, count: f.n * f.d)  // written, not accumulated
        try f.forward(t, out: &out, saved: DispatchSaved(), scratch: Scratch())
        let (ref, bound) = f.reference()
        var worst = 0.0
        for i in 0..<out.count {
            XCTAssertLessThanOrEqual(abs(Double(out[i]) - ref[i]), bound[i], "out[\(i / f.d)][\(i % f.d)]")
            worst = max(worst, abs(Double(out[i]) - ref[i]) / bound[i])
        }
        // The bound is a few hundred u of the output's scale, so a wrong row, slot or weight cannot hide in it.
        let scale = ref.map(abs).max()!
        XCTAssertLessThan(bound.max()!, 1e-4 * scale)
        print("round trip: worst error \(worst) of its bound; largest bound \(bound.max()! / scale) of max |out|")

        XCTAssertEqual(exchange.calls, ["counts layer 5 forward counts", "Float 11 layer 5 forward dispatch",
                                        "Int32 3 layer 5 forward dispatch", "Float 8 layer 5 forward combine"],
                       "rows [x | K weights] (D+K floats), then K Int32 ids, then D floats back")
        XCTAssertEqual(counters.rowsSent[5], f.n, "one rank: one row per token")
        XCTAssertEqual(counters.pairs[5], f.n * f.k)
    }

    /// ∂L/∂(slot weight) for L = Σ R·out is R·y of that slot: exact algebra, so compared with the float64
    /// reference; dx accumulates; backward's exchanges are the protocol's.
    func testBackwardWeightGradientIsTheSlotsOutput() throws {
        let f = DispatchFixture()
        let exchange = RecordingExchange()
        let t = f.dispatcher(exchange)
        let saved = DispatchSaved(), scratch = Scratch()
        var out = [Float](repeating: 0, count: f.n * f.d)
        try f.forward(t, out: &out, saved: saved, scratch: scratch)
        var rng = SplitMix64(seed: 5)
        let r = (0..<(f.n * f.d)).map { _ in Float(rng.nextGaussian()) }
        exchange.calls = []
        var dx = [Float](repeating: 0, count: f.n * f.d), dTopk = [Float](repeating: .nan, count: f.n * f.k)
        try f.backward(t, dOut: r, dx: &dx, dTopk: &dTopk, saved: saved, scratch: scratch)
        XCTAssertEqual(exchange.calls, ["Float 8 layer 5 backward dispatch", "Float 11 layer 5 backward combine"],
                       "∂out rows to the owners (D floats), [∂x | ∂weight per slot] back (D+K floats)")

        // The engine computes da = Wdᵀ·R (a dot of length D: ≤ D·u·Σ|Wd·R| off) and dw = da·a (length I:
        // ≤ I·u·Σ|da·a|, a off by `aErr`), then adds dw to a zeroed slot (exact).
        for tok in 0..<f.n {
            for j in 0..<f.k {
                let p = f.pair(token: tok, slot: j), wd = f.values(Int(f.topkIdx[tok * f.k + j]), "down_proj")
                var expected = 0.0, bound = 0.0
                for c in 0..<f.d { expected += Double(r[tok * f.d + c]) * p.y[c] }
                for i in 0..<f.inner {
                    var da = 0.0, daAbs = 0.0
                    for c in 0..<f.d { da += wd[c * f.inner + i] * Double(r[tok * f.d + c]); daAbs += abs(wd[c * f.inner + i] * Double(r[tok * f.d + c])) }
                    bound += Double(f.d) * u * daAbs * abs(p.a[i]) + abs(da) * p.aErr[i] + Double(f.inner) * u * abs(da * p.a[i])
                }
                XCTAssertLessThanOrEqual(abs(Double(dTopk[tok * f.k + j]) - expected), bound, "dTopkWeight[\(tok)][\(j)]")
            }
        }
        // dx is accumulated: one row per token on one rank, so a second pass adds the same row again (exactly 2×).
        let first = dx
        try f.backward(t, dOut: r, dx: &dx, dTopk: &dTopk, saved: saved, scratch: scratch)
        XCTAssertEqual(dx, first.map { 2 * $0 })
    }

    /// dx and every projection's gradient of the busiest expert against central finite differences of
    /// L = Σ R·out along a direction half along the gradient (signal) and half random.
    func testBackwardMatchesFiniteDifferences() throws {
        var f = DispatchFixture()
        let t = f.dispatcher(LocalExchange())
        let saved = DispatchSaved(), scratch = Scratch()
        var rng = SplitMix64(seed: 9)
        let r = (0..<(f.n * f.d)).map { _ in Float(rng.nextGaussian()) }
        var out = [Float](repeating: 0, count: f.n * f.d)
        func loss(_ f: DispatchFixture) throws -> Double {
            try f.forward(t, out: &out, saved: saved, scratch: scratch)
            return zip(out, r).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
        }
        _ = try loss(f)
        for p in f.parameters.ordered { p.zeroGrad() }
        var dx = [Float](repeating: 0, count: f.n * f.d), dTopk = [Float](repeating: 0, count: f.n * f.k)
        try f.backward(t, dOut: r, dx: &dx, dTopk: &dTopk, saved: saved, scratch: scratch)

        // Rounding noise: each out element is within `bound` of exact (reference()), so L is within
        // E = Σ|R|·bound, and a central difference within 2E/(2ε) = E/ε. Truncation is ε²/6·L''': with
        // ε = 1e-2 about 2e-5·L''' for the SwiGLU's smooth nonlinearity, inside 1e-2 of the derivative;
        // L is linear in down_proj, so there only the noise is allowed.
        let eps: Float = 1e-2
        let noise = zip(r, f.reference().bound).reduce(0.0) { $0 + abs(Double($1.0)) * $1.1 } / Double(eps)
        func check(_ name: String, gradient g: [Float], linear: Bool, shift: (_ direction: [Float], _ step: Float) -> Void) throws {
            let random = (0..<g.count).map { _ in Float(rng.nextGaussian()) }
            func unit(_ v: [Float]) -> [Float] { let s = v.reduce(0) { $0 + $1 * $1 }.squareRoot(); return v.map { $0 / s } }
            let dir = unit(zip(unit(g), unit(random)).map { $0 + $1 })
            let analytic = zip(g, dir).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
            shift(dir, eps); let plus = try loss(f)
            shift(dir, -2 * eps); let minus = try loss(f)
            shift(dir, eps)
            let numeric = (plus - minus) / (2 * Double(eps))
            XCTAssertGreaterThan(abs(analytic), 10 * noise, "\(name): a derivative above the noise")
            XCTAssertEqual(numeric, analytic, accuracy: (linear ? 0 : 1e-2 * abs(analytic)) + noise,
                           "\(name): finite difference \(numeric) vs analytic \(analytic)")
        }
        try check("x", gradient: dx, linear: false) { dir, step in for i in 0..<f.x.count { f.x[i] += step * dir[i] } }
        let loads = (0..<f.e).map { ex in f.topkIdx.filter { $0 == ex }.count }
        let busiest = loads.firstIndex(of: loads.max()!)!
        for proj in ["gate_proj", "up_proj", "down_proj"] {
            let p = f.parameters["model.layers.0.mlp.experts.\(busiest).\(proj).weight"]!
            let g = Array(UnsafeBufferPointer(start: p.gradPointer, count: p.count))
            try check(p.name, gradient: g, linear: proj == "down_proj") { dir, step in for i in 0..<p.count { p.value[i] += step * dir[i] } }
        }
        XCTAssertEqual(loads[4], 0, "the fixture's unused expert had zero rows")
        let unused = f.parameters["model.layers.0.mlp.experts.4.up_proj.weight"]!
        XCTAssert(UnsafeBufferPointer(start: unused.gradPointer, count: unused.count).allSatisfy { $0 == 0 }, "no rows, no gradient")
    }

    /// Buffers grow only; the second identical step reuses every one; held bytes include nested groups.
    func testReusableBuffersAreReusedAcrossSteps() throws {
        let r = Reusable<Float>()
        let p = r.reuse(count: 4)
        for i in 0..<4 { p[i] = Float(i + 1) }
        XCTAssertEqual(r.reuse(count: 3), p, "smaller: the same memory")
        XCTAssertEqual(p[3], 4, "contents kept unless zeroed")
        _ = r.reuse(count: 3, zeroed: true)
        XCTAssertEqual([p[0], p[1], p[2], p[3]], [0, 0, 0, 4], "zeroed: the requested count only")
        let big = r.reuse(count: 100)
        XCTAssertEqual(r.capacity, 100)
        XCTAssertEqual(Int(bitPattern: big) % 64, 0, "64-byte aligned")
        XCTAssert((0..<100).allSatisfy { big[$0] == 0 }, "grown memory starts zeroed")

        let layer = LayerSaved()
        _ = layer.attention.q_NQ.reuse(count: 5)
        _ = layer.moe.dispatch.counts.reuse(count: 3)
        XCTAssertEqual(layer.heldBytes, 4 * 5 + 4 * 3, "nested groups are counted")

        let f = DispatchFixture()
        let t = f.dispatcher(LocalExchange())
        let saved = DispatchSaved(), scratch = Scratch()
        var out = [Float](repeating: 0, count: f.n * f.d), dx = out, dTopk = [Float](repeating: 0, count: f.n * f.k)
        func step() throws {
            try f.forward(t, out: &out, saved: saved, scratch: scratch)
            try f.backward(t, dOut: out, dx: &dx, dTopk: &dTopk, saved: saved, scratch: scratch)
        }
        try step()
        let bytes = saved.heldBytes + scratch.heldBytes, received = saved.received_MW.reuse(count: 0)
        XCTAssertGreaterThan(bytes, 0)
        try step()
        XCTAssertEqual(saved.heldBytes + scratch.heldBytes, bytes, "a second step allocates nothing")
        XCTAssertEqual(saved.received_MW.reuse(count: 0), received)
    }
}

@testable import ESFTModel
import ESFTKernels
import XCTest

/// Small routed experts with random fp32 weights (owned, trainable), a routing, and a per-token
/// float64 reference of the routed-expert output, for the TokenDispatcher tests.
struct DispatchFixture {
    static let u = 0x1p-24  // fp32 unit roundoff
    let n: Int, d: Int, inner: Int, e: Int, k: Int
    let parameters = ParameterSet(family: .deepseekV2)
    let experts: [SwiGLUWeights?]
    var x: [Float], topkIdx: [Int32], topkWeight: [Float]

    /// Expert `unused` is never routed to (an expert with zero rows); the others get uneven loads.
    /// Experts in `frozenBF16` are stored bf16 and frozen (as mapped frozen experts are), the rest fp32 and trainable.
    init(tokens n: Int = 9, dim d: Int = 8, inner: Int = 6, experts e: Int = 5, k: Int = 3, unused: Int = 4, seed: UInt64 = 11,
         frozenBF16: Set<Int> = []) {
        self.n = n; self.d = d; self.inner = inner; self.e = e; self.k = k
        var rng = SplitMix64(seed: seed)
        for ex in 0..<e {
            for (proj, shape) in [(ParameterID.Projection.gate, [inner, d]), (.up, [inner, d]), (.down, [d, inner])] {
                let spec = ParameterSpec(.routedExpert(proj, layer: 0, expert: ex), shape, family: .deepseekV2)
                let values = (0..<spec.count).map { _ in Float(rng.nextGaussian() * 0.5) }
                if frozenBF16.contains(ex) {
                    let bits = BF16Bits(values.map { UInt16($0.bitPattern >> 16) })  // truncated: any bf16 values do
                    parameters.add(Parameter(spec, weight: .bf16(bits.pointer), owner: bits))
                } else {
                    let p = Parameter(spec)
                    p.value.update(from: values, count: values.count)
                    p.makeTrainable()
                    parameters.add(p)
                }
            }
        }
        let params = parameters
        experts = (0..<e).map { ex in try! SwiGLUWeights(params, { .routedExpert($0, layer: 0, expert: ex) }, dim: d, inner: inner) }
        x = (0..<(n * d)).map { _ in Float(rng.nextGaussian()) }
        topkIdx = []; topkWeight = []
        for _ in 0..<n {
            var chosen: [Int32] = []
            while chosen.count < k {
                let c = Int32(rng.next() % UInt64(e))
                if c != unused && !chosen.contains(c) { chosen.append(c) }
            }
            topkIdx += chosen
            topkWeight += (0..<k).map { _ in Float(0.1 + 0.9 * rng.nextUnit()) }
        }
    }

    func dispatcher(_ exchange: RowExchange, layer: Int = 5, counters: DispatchCounters = DispatchCounters()) -> TokenDispatcher {
        TokenDispatcher(layer: layer, dim: d, k: k, inner: inner, placement: .contiguous(experts: e, ranks: 1), exchange: exchange,
                        experts: experts, counters: counters)
    }

    func forward(_ t: TokenDispatcher, out: inout [Float], saved: DispatchSaved, scratch: Scratch) throws {
        try x.withUnsafeBufferPointer { xp in
            try topkIdx.withUnsafeBufferPointer { ip in
                try topkWeight.withUnsafeBufferPointer { wp in
                    try out.withUnsafeMutableBufferPointer { op in
                        try t.forward(x: xp.baseAddress!, tokens: n, topkIdx: ip.baseAddress!, topkWeight: wp.baseAddress!,
                                      out: op.baseAddress!, saved: saved, scratch: scratch)
                    }
                }
            }
        }
    }

    func backward(_ t: TokenDispatcher, dOut: [Float], dx: inout [Float], dTopk: inout [Float],
                  saved: DispatchSaved, scratch: Scratch) throws {
        try dOut.withUnsafeBufferPointer { d in
            try dx.withUnsafeMutableBufferPointer { x in
                try dTopk.withUnsafeMutableBufferPointer { w in
                    try t.backward(dOut: d.baseAddress!, tokens: n, dx: x.baseAddress!, dTopkWeight: w.baseAddress!,
                                   saved: saved, scratch: scratch)
                }
            }
        }
    }

    func values(_ expert: Int, _ proj: String) -> [Double] {
        let p = parameters["model.layers.0.mlp.experts.\(expert).\(proj).weight"]!
        return (0..<p.count).map { Double(p.value[$0]) }
    }

    /// One (token, slot) pair in float64: the expert's output y and product a, with first-order bounds on
    /// the fp32 engine's rounding error in each (componentwise, for any summation order):
    ///   g = Wg·x, u = Wu·x: a dot of length D is off by ≤ D·u·Σ|terms| (G, U below);
    ///   a = silu(g)·u: |silu'| ≤ 1.1 carries g's error, |silu(g)| carries u's, and the formula's own
    ///     rounding (expf ≤ 1 ulp = 2u, then +, ÷, ×: u each) adds ≤ 5u·|a|;
    ///   y = Wd·a: Σ_i |Wd|·(error of a) + I·u·Σ|Wd·a|.
    struct Pair { var y: [Double], yErr: [Double], a: [Double], aErr: [Double] }

    func pair(token t: Int, slot j: Int) -> Pair {
        let ex = Int(topkIdx[t * k + j]), u = Self.u
        let wg = values(ex, "gate_proj"), wu = values(ex, "up_proj"), wd = values(ex, "down_proj")
        var a = [Double](repeating: 0, count: inner), aErr = a
        for i in 0..<inner {
            var g = 0.0, up = 0.0, gAbs = 0.0, upAbs = 0.0
            for c in 0..<d {
                let xc = Double(x[t * d + c])
                g += wg[i * d + c] * xc; up += wu[i * d + c] * xc
                gAbs += abs(wg[i * d + c] * xc); upAbs += abs(wu[i * d + c] * xc)
            }
            let s = g / (1 + exp(-g))
            a[i] = s * up
            aErr[i] = 1.1 * Double(d) * u * gAbs * abs(up) + abs(s) * Double(d) * u * upAbs + 5 * u * abs(a[i])
        }
        var y = [Double](repeating: 0, count: d), yErr = y
        for c in 0..<d {
            var abs_ = 0.0
            for i in 0..<inner {
                y[c] += wd[c * inner + i] * a[i]
                yErr[c] += abs(wd[c * inner + i]) * aErr[i]
                abs_ += abs(wd[c * inner + i] * a[i])
            }
            yErr[c] += Double(inner) * u * abs_
        }
        return Pair(y: y, yErr: yErr, a: a, aErr: aErr)
    }

    /// out[t] = Σ_j w_j·y_j per token, with its bound: the pairs' errors weighted, plus the weighted sum's
    /// own rounding, K products and K additions into a zeroed row: (K+1)·u·Σ|w·y|.
    func reference() -> (out: [Double], bound: [Double]) {
        var out = [Double](repeating: 0, count: n * d), bound = out
        for t in 0..<n {
            var mag = [Double](repeating: 0, count: d)
            for j in 0..<k {
                let p = pair(token: t, slot: j), w = Double(topkWeight[t * k + j])
                for c in 0..<d {
                    out[t * d + c] += w * p.y[c]
                    bound[t * d + c] += abs(w) * p.yErr[c]
                    mag[c] += abs(w * p.y[c])
                }
            }
            for c in 0..<d { bound[t * d + c] += Double(k + 1) * Self.u * mag[c] }
        }
        return (out, bound)
    }
}

/// Owned bf16 values for a frozen test parameter.
final class BF16Bits {
    let pointer: UnsafeMutablePointer<UInt16>
    init(_ v: [UInt16]) { pointer = .allocate(capacity: v.count); pointer.initialize(from: v, count: v.count) }
    deinit { pointer.deallocate() }
}

/// A LocalExchange that records each call as "element width tag".
final class RecordingExchange: RowExchange {
    private let local = LocalExchange()
    var calls: [String] = []
    var rank: Int { 0 }
    var ranks: Int { 1 }
    func exchangeCounts(_ sendCounts: [Int], tag: String?) throws -> [Int] {
        calls.append("counts \(tag ?? "")")
        return try local.exchangeCounts(sendCounts, tag: tag)
    }
    func exchangeRows<T: CollectiveElement>(send: UnsafePointer<T>?, sendCounts: [Int], receive: UnsafeMutablePointer<T>?,
                                            receiveCounts: [Int], width: Int, tag: String?) throws {
        calls.append("\(T.self) \(width) \(tag ?? "")")
        try local.exchangeRows(send: send, sendCounts: sendCounts, receive: receive, receiveCounts: receiveCounts, width: width, tag: tag)
    }
}

/// Rank 0 of a 3-rank job, for planning only: `plan` never exchanges, so any call here fails the test.
final class PlanOnlyExchange: RowExchange {
    var rank: Int { 0 }
    var ranks: Int { 3 }
    func exchangeCounts(_ sendCounts: [Int], tag: String?) throws -> [Int] {
        XCTFail("plan exchanged counts"); return sendCounts
    }
    func exchangeRows<T: CollectiveElement>(send: UnsafePointer<T>?, sendCounts: [Int], receive: UnsafeMutablePointer<T>?,
                                            receiveCounts: [Int], width: Int, tag: String?) throws {
        XCTFail("plan exchanged rows")
    }
}

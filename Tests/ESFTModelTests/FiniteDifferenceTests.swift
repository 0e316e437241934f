import ESFTKernels
import ESFTModel
import ESFTTestSupport
import XCTest

/// Central finite differences of the loss along a random direction, against the analytic gradient,
/// for the aux balance loss and for group-limited routing (whose top-k must not flip under the step).
final class FiniteDifferenceTests: XCTestCase {
    /// Directional derivative check on one parameter; `objective` picks which loss is differentiated.
    private func check(fixture f: ModelFixture, parameter name: String, alpha: Float, auxOnly: Bool,
                       file: StaticString = #filePath, line: UInt = #line) throws {
        f.model.auxLossAlpha = alpha
        let p = try XCTUnwrap(f.parameters[name], file: file, line: line)
        p.makeTrainable()
        var routes: [[Int32]] = []
        f.model.routingObserver = { view in routes.append(Array(UnsafeBufferPointer(start: view.topkIdx, count: view.tokens * view.k))) }
        func objective(_ r: ForwardResult) -> Double { auxOnly ? r.auxLoss : r.loss + r.auxLoss }

        p.zeroGrad()
        routes = []
        let base = try f.model.forward(f.batch, training: true, lossDenominator: auxOnly ? .infinity : nil)
        try f.model.backward()
        let baseRoutes = routes
        XCTAssertFalse(baseRoutes.isEmpty, "the model has MoE layers", file: file, line: line)

        // Direction: half along the analytic gradient (a strong signal over fp32 noise), half random (so a
        // wrong gradient cannot agree with itself); unit norm.
        var rng = SplitMix64(seed: 42)
        let g = Array(UnsafeBufferPointer(start: p.gradPointer, count: p.count))
        let random = (0..<p.count).map { _ in Float(rng.nextGaussian()) }
        func unit(_ x: [Float]) -> [Float] { let n = x.reduce(0) { $0 + $1 * $1 }.squareRoot(); return x.map { $0 / max(n, 1e-30) } }
        let direction = unit(zip(unit(g), unit(random)).map { $0 + $1 })
        let analytic = (0..<p.count).reduce(0.0) { $0 + Double(g[$1]) * Double(direction[$1]) }
        let original = Array(UnsafeBufferPointer(start: p.value, count: p.count))
        func shifted(_ step: Float) throws -> (Double, Bool) {
            for i in 0..<p.count { p.value[i] = original[i] + step * direction[i] }
            routes = []
            let r = try f.model.forward(f.batch, training: false, lossDenominator: auxOnly ? .infinity : nil)
            return (objective(r), routes == baseRoutes)
        }
        defer { for i in 0..<p.count { p.value[i] = original[i] } }
        // The largest step that leaves every token's experts unchanged (routing is piecewise smooth).
        for eps: Float in [1e-3, 3e-4, 1e-4, 3e-5, 1e-5] {
            let (plus, samePlus) = try shifted(eps), (minus, sameMinus) = try shifted(-eps)
            guard samePlus && sameMinus else { continue }
            let numeric = (plus - minus) / (2 * Double(eps))
            // fp32 evaluation noise of the objective, amplified by 1/(2·eps).
            let noise = 8 * 6e-8 * max(abs(objective(base)), 1e-3) / Double(eps)
            XCTAssertGreaterThan(abs(analytic), 10 * noise, "\(name): a derivative worth checking", file: file, line: line)
            XCTAssertEqual(numeric, analytic, accuracy: 1e-2 * abs(analytic) + noise,
                           "\(name) (aux only: \(auxOnly)): finite difference \(numeric) vs analytic \(analytic) at step \(eps)",
                           file: file, line: line)
            return
        }
        XCTFail("\(name): every step changed the routing; cannot check by finite differences", file: file, line: line)
    }

    private func groupLimitedFixture() throws -> ModelFixture {
        for name in try Fixtures.modelNames() {
            let f = try ModelFixture(name)
            if f.checkpoint.config.router.method == .groupLimitedGreedy { return f }
        }
        throw XCTSkip("no group_limited_greedy fixture")
    }

    func testAuxLossGradientByFiniteDifferences() throws {
        let f = try groupLimitedFixture()
        let l = try XCTUnwrap(f.checkpoint.config.moeLayers.first)
        try check(fixture: f, parameter: "model.layers.\(l).mlp.gate.weight", alpha: 0.5, auxOnly: true)
        try check(fixture: f, parameter: "model.layers.\(l).post_attention_layernorm.weight", alpha: 0.5, auxOnly: true)
    }

    func testGroupLimitedRoutingGradientByFiniteDifferences() throws {
        let f = try groupLimitedFixture()
        let l = try XCTUnwrap(f.checkpoint.config.moeLayers.last)
        try check(fixture: f, parameter: "model.layers.\(l).mlp.gate.weight", alpha: 0.1, auxOnly: false)
        try check(fixture: f, parameter: "model.layers.\(l).mlp.experts.0.down_proj.weight", alpha: 0.1, auxOnly: false)
        try check(fixture: f, parameter: "model.layers.0.self_attn.kv_a_proj_with_mqa.weight", alpha: 0.1, auxOnly: false)
    }
}


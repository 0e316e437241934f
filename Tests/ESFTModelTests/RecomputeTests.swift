import ESFTKernels
import ESFTModel
import ESFTTestSupport
import XCTest

/// Activation checkpointing (`recomputeLayers`): backward re-runs each trained layer's forward from its
/// kept input into the shared buffer set, then runs that layer's backward. The recomputed forward performs
/// the first forward's operations on the same input with the same thread count, so every activation is
/// bit-for-bit the first one's, and so is every gradient: the comparison is exact (a tolerance would hide
/// a recomputation that read a buffer another layer had overwritten).
final class RecomputeTests: XCTestCase {
    private func gradients(_ f: ModelFixture, recompute: Bool) throws -> (loss: Double, aux: Double, grads: [String: [Float]]) {
        f.model.recomputeLayers = recompute
        f.model.zeroGrad()
        let r = try f.model.forward(f.batch, training: true)
        try f.model.backward()
        return (r.loss, r.auxLoss, Dictionary(uniqueKeysWithValues: f.parameters.trainable.map {
            ($0.name, Array(UnsafeBufferPointer(start: $0.gradPointer, count: $0.count)))
        }))
    }

    /// Every parameter trainable (backward reaches the embedding), and with the aux loss on, whose gradient
    /// comes from routing the recomputation must reproduce.
    func testRecomputedGradientsEqualKeptActivations() throws {
        for name in try Fixtures.modelNames() {
            let f = try ModelFixture(name)
            for p in f.parameters.ordered { p.makeTrainable() }
            f.model.auxLossAlpha = 0.01
            let kept = try gradients(f, recompute: false)
            let keptBytes = f.model.activationBytes
            let again = try gradients(f, recompute: true)
            XCTAssertEqual(again.loss, kept.loss, "\(name): forward is unchanged")
            XCTAssertEqual(again.aux, kept.aux, "\(name): the aux loss is counted once")
            XCTAssertEqual(Set(again.grads.keys), Set(kept.grads.keys))
            XCTAssertTrue(kept.grads["model.embed_tokens.weight"]?.contains { $0 != 0 } ?? false, "\(name): backward reached the embedding")
            for (param, g) in kept.grads { XCTAssertEqual(again.grads[param], g, "\(name): \(param)") }
            // A fresh model holds only what recomputation needs: less than keeping every layer's activations.
            let fresh = try ModelFixture(name)
            for p in fresh.parameters.ordered { p.makeTrainable() }
            _ = try gradients(fresh, recompute: true)
            XCTAssertLessThan(fresh.model.activationBytes, keptBytes, "\(name): recomputation keeps less")
        }
    }

    /// Only routed experts trainable: backward stops at the lowest MoE layer, and layers below it stay frozen.
    func testRecomputeWithExpertsOnly() throws {
        for name in try Fixtures.modelNames() {
            let f = try ModelFixture(name)
            let experts = f.parameters.ordered.filter { if case .routedExpert = $0.id.kind { return true } else { return false } }
            guard !experts.isEmpty else { continue }
            for p in experts { p.makeTrainable() }
            let kept = try gradients(f, recompute: false)
            let again = try gradients(f, recompute: true)
            XCTAssertEqual(again.loss, kept.loss)
            for (param, g) in kept.grads { XCTAssertEqual(again.grads[param], g, "\(name): \(param)") }
        }
    }
}

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

    /// A fresh model per pass, the recomputing one first: its per-layer buffers were never filled, so a
    /// backward that read them instead of the recomputed set would give other gradients.
    private func bothWays(_ name: String, _ setUp: (ModelFixture) -> Void) throws
        -> (kept: (loss: Double, aux: Double, grads: [String: [Float]]), again: (loss: Double, aux: Double, grads: [String: [Float]]),
            keptBytes: Int, againBytes: Int) {
        let r = try ModelFixture(name)
        setUp(r)
        let again = try gradients(r, recompute: true)
        let k = try ModelFixture(name)
        setUp(k)
        let kept = try gradients(k, recompute: false)
        return (kept, again, k.model.activationBytes, r.model.activationBytes)
    }

    /// Every parameter trainable (backward reaches the embedding), and with the aux loss on, whose gradient
    /// comes from routing the recomputation must reproduce.
    func testRecomputedGradientsEqualKeptActivations() throws {
        for name in try Fixtures.modelNames() {
            let (kept, again, keptBytes, againBytes) = try bothWays(name) { f in
                for p in f.parameters.ordered { p.makeTrainable() }
                f.model.auxLossAlpha = 0.01
            }
            XCTAssertEqual(again.loss, kept.loss, "\(name): forward is unchanged")
            XCTAssertEqual(again.aux, kept.aux, "\(name): the aux loss is counted once")
            XCTAssertGreaterThan(kept.aux, 0, "\(name): the aux loss is on")
            XCTAssertEqual(Set(again.grads.keys), Set(kept.grads.keys))
            XCTAssertTrue(kept.grads["model.embed_tokens.weight"]?.contains { $0 != 0 } ?? false, "\(name): backward reached the embedding")
            for (param, g) in kept.grads { XCTAssertEqual(again.grads[param], g, "\(name): \(param)") }
            XCTAssertLessThan(againBytes, keptBytes, "\(name): recomputation keeps less")
        }
    }

    /// Only routed experts trainable: backward stops at the lowest MoE layer, and layers below it stay frozen.
    func testRecomputeWithExpertsOnly() throws {
        for name in try Fixtures.modelNames() {
            let (kept, again, _, _) = try bothWays(name) { f in
                for p in f.parameters.ordered where p.id.routedExpert != nil { p.makeTrainable() }
            }
            XCTAssertFalse(kept.grads.isEmpty, "\(name): routed experts train")
            XCTAssertEqual(again.loss, kept.loss)
            for (param, g) in kept.grads { XCTAssertEqual(again.grads[param], g, "\(name): \(param)") }
        }
    }
}

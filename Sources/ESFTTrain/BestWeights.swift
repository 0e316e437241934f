import ESFTKernels

/// `final: best` (the reference's load_best_model_at_end): a copy of this rank's trainable weights as they
/// were at the evaluation with the lowest validation loss, written as trained.safetensors when the run ends.
/// It costs one more copy of the trainable weights per rank (ESFT: the selected experts only), and no
/// collective: every rank sees the same validation loss and keeps its own part.
final class BestWeights {
    private(set) var step: Int?
    private(set) var loss = Double.infinity
    private let copy: FloatBuffer

    init(count: Int) { copy = FloatBuffer(count: count, zeroed: false) }

    /// Keeps the arena's weights if `loss` is lower than every earlier one (ties keep the earlier step, as
    /// the reference's Trainer does).
    func consider(step s: Int, loss l: Double, weights: FloatBuffer, count: Int) {
        guard l < loss else { return }
        loss = l; step = s
        copy.pointer.update(from: weights.pointer, count: count)
    }

    /// Puts the kept weights back into the arena (the run is over: nothing trains after this).
    func restore(into weights: FloatBuffer, count: Int) {
        guard step != nil else { return }
        weights.pointer.update(from: copy.pointer, count: count)
    }
}

import ESFTKernels
import ESFTModel

/// A rank's trainable state in four contiguous fp32 arenas — weights, gradients and AdamW's two
/// moments — laid out alike: the routed experts this rank owns first (the owned region), then the
/// tensors every rank holds a copy of (the replicated region). Each trainable `Parameter` is bound to its
/// views (`bindTrainable`), so the engine accumulates gradients straight into the arena: the replicated
/// gradients are all-reduced in place, clipping is one loop, and a checkpoint writes whole regions.
public final class ParameterArena {
    /// One tensor's place in every arena.
    public struct View {
        public let parameter: Parameter
        public let offset: Int
        public var id: ParameterID { parameter.id }
        public var count: Int { parameter.count }
    }

    /// Owned views, then replicated views; each list in the order it was given (the model's order).
    public let views: [View]
    public let ownedViewCount: Int
    /// Floats in the owned region; the replicated region follows it.
    public let ownedCount: Int
    public let count: Int
    public let weights: FloatBuffer
    public let gradients: FloatBuffer
    public let firstMoment: FloatBuffer
    public let secondMoment: FloatBuffer

    /// Binds every parameter to its views: current values are copied (widened from bf16) into the weight
    /// arena, gradients and moments start at zero.
    public init(owned: [Parameter], replicated: [Parameter]) {
        var views: [View] = [], offset = 0
        for p in owned + replicated { views.append(View(parameter: p, offset: offset)); offset += p.count }
        self.views = views
        ownedViewCount = owned.count
        ownedCount = owned.reduce(0) { $0 + $1.count }
        count = offset
        weights = FloatBuffer(count: count, zeroed: false)
        gradients = FloatBuffer(count: count)
        firstMoment = FloatBuffer(count: count)
        secondMoment = FloatBuffer(count: count)
        for v in views { v.parameter.bindTrainable(value: weights.pointer + v.offset, grad: gradients.pointer + v.offset, owner: self) }
    }

    public var ownedViews: ArraySlice<View> { views[..<ownedViewCount] }
    public var replicatedViews: ArraySlice<View> { views[ownedViewCount...] }
    public var replicatedCount: Int { count - ownedCount }
    /// The replicated region of the gradient arena (what the data-parallel all-reduce sums).
    public var replicatedGradients: UnsafeMutablePointer<Float> { gradients.pointer + ownedCount }

    /// Bytes of optimizer state (the two moments).
    public var optimizerStateBytes: Int { 8 * count }

    public func zeroGradients() { gradients.zero() }

    /// Σ g² over `views`, summed per tensor in Double and then across tensors in order (the order the
    /// global norm has always used, so its value does not depend on the arena layout).
    public func gradientSumOfSquares(_ views: ArraySlice<View>) -> Double {
        views.reduce(0.0) { acc, v in
            let g = gradients.pointer + v.offset
            var s = 0.0
            for i in 0..<v.count { s += Double(g[i]) * Double(g[i]) }
            return acc + s
        }
    }

    /// g ← scale·g over the whole gradient arena (gradient clipping).
    /// The index in `views` of the first of `subset` whose gradient holds a NaN or ±∞, if any.
    public func firstNonFinite(_ subset: ArraySlice<View>) -> Int? {
        subset.indices.first { i in
            let v = views[i], g = gradients.pointer + v.offset
            return !(0..<v.count).allSatisfy { g[$0].isFinite }
        }
    }

    public func scaleGradients(by scale: Float) {
        let g = gradients.pointer
        parallelChunks(count, grain: 1 << 16) { range in for i in range { g[i] *= scale } }
    }
}

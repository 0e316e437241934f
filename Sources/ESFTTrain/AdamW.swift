import ESFTKernels
import ESFTModel
import Foundation

/// AdamW exactly as torch.optim.AdamW computes it, over the trainable parameters only: the state (two
/// fp32 moments, in the arena) exists for nothing else. Weight decay applies to matrices, not to norm
/// weights or biases (as the Hugging Face Trainer groups parameters).
public final class AdamW {
    public struct Hyperparameters: Codable, Equatable, Sendable {
        public var beta1: Double = 0.9
        public var beta2: Double = 0.95
        public var eps: Double = 1e-8
        public var weightDecay: Double = 0.1
        public init() {}
    }

    public let hyper: Hyperparameters
    public let arena: ParameterArena
    public private(set) var step = 0

    public init(_ arena: ParameterArena, hyper: Hyperparameters) {
        self.arena = arena; self.hyper = hyper
    }

    /// Continues from a checkpoint: the moments are in the arena, the bias corrections need the step.
    func restore(step: Int) { self.step = step }

    /// Bytes of optimizer state (two moments per trainable parameter).
    public var stateBytes: Int { arena.optimizerStateBytes }

    /// One update with learning rate `lr` from the current gradients. Element-wise, so one pass over each
    /// tensor's views; only the decay differs between tensors.
    public func update(lr: Double) {
        step += 1
        let b1 = Float(hyper.beta1), b2 = Float(hyper.beta2), eps = Float(hyper.eps)
        let bias1 = 1 - pow(hyper.beta1, Double(step)), bias2 = 1 - pow(hyper.beta2, Double(step))
        let stepSize = Float(lr / bias1), bias2Sqrt = Float(bias2.squareRoot())
        for view in arena.views {
            let o = view.offset
            let w = arena.weights.pointer + o, g = arena.gradients.pointer + o
            let m = arena.firstMoment.pointer + o, v = arena.secondMoment.pointer + o
            let decay: Float = view.parameter.shape.count > 1 ? Float(1 - lr * hyper.weightDecay) : 1
            parallelChunks(view.count, grain: 1 << 14) { range in
                for j in range {
                    w[j] *= decay
                    m[j] = b1 * m[j] + (1 - b1) * g[j]
                    v[j] = b2 * v[j] + (1 - b2) * g[j] * g[j]
                    w[j] -= stepSize * m[j] / (v[j].squareRoot() / bias2Sqrt + eps)
                }
            }
        }
    }
}

/// Learning rate per optimizer step (0-based).
public enum LRSchedule: Equatable, Sendable {
    case constant(lr: Double, warmup: Int)
    /// Linear warm-up to `lr`, then cosine decay to `minLR` at `total` steps.
    case cosine(lr: Double, warmup: Int, total: Int, minLR: Double)

    public func lr(at step: Int) -> Double {
        switch self {
        case .constant(let lr, let warmup):
            return warmup > 0 && step < warmup ? lr * Double(step + 1) / Double(warmup) : lr
        case .cosine(let lr, let warmup, let total, let minLR):
            if warmup > 0 && step < warmup { return lr * Double(step + 1) / Double(warmup) }
            let progress = Double(step - warmup) / Double(max(1, total - warmup))
            return minLR + (lr - minLR) * 0.5 * (1 + cos(.pi * min(1, progress)))
        }
    }
}

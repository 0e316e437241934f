import ESFTKernels
import ESFTModel
import Foundation

/// AdamW exactly as torch.optim.AdamW computes it, over the trainable parameters only: the state (two
/// fp32 moments) exists for nothing else. Weight decay applies to matrices, not to norm weights or
/// biases (as the Hugging Face Trainer groups parameters).
public final class AdamW {
    public struct Hyperparameters: Codable, Equatable, Sendable {
        public var beta1: Double = 0.9
        public var beta2: Double = 0.95
        public var eps: Double = 1e-8
        public var weightDecay: Double = 0.1
        public init() {}
    }

    public let hyper: Hyperparameters
    public let parameters: [Parameter]
    public private(set) var step = 0
    let firstMoment: [FloatBuffer]
    let secondMoment: [FloatBuffer]

    public init(_ parameters: [Parameter], hyper: Hyperparameters) {
        precondition(parameters.allSatisfy(\.isTrainable))
        self.parameters = parameters; self.hyper = hyper
        firstMoment = parameters.map { FloatBuffer(count: $0.count) }
        secondMoment = parameters.map { FloatBuffer(count: $0.count) }
    }

    /// Bytes of optimizer state (two moments per trainable parameter).
    public var stateBytes: Int { firstMoment.reduce(0) { $0 + $1.count * 8 } }

    /// One update with learning rate `lr` from the current gradients.
    public func update(lr: Double) {
        step += 1
        let b1 = Float(hyper.beta1), b2 = Float(hyper.beta2), eps = Float(hyper.eps)
        let bias1 = 1 - pow(hyper.beta1, Double(step)), bias2 = 1 - pow(hyper.beta2, Double(step))
        let stepSize = Float(lr / bias1), bias2Sqrt = Float(bias2.squareRoot())
        for (i, p) in parameters.enumerated() {
            let w = p.value, g = p.gradPointer!, m = firstMoment[i].pointer, v = secondMoment[i].pointer
            let decay: Float = p.shape.count > 1 ? Float(1 - lr * hyper.weightDecay) : 1
            parallelChunks(p.count, grain: 1 << 14) { range in
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

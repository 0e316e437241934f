import ESFTKernels
import Foundation

/// Random initialisation as HF's `_init_weights`: weights normal(0, initializer_range), biases 0,
/// RMSNorm weights 1. Tensor i of `parameterSpecs()` draws from its own stream (seed, i), so a tensor's
/// values do not depend on threads, visiting order, or whether the model is built in memory or on disk.
public enum RandomInit {
    public static func fill(_ spec: ParameterSpec, index: Int, seed: UInt64, std: Float, into p: UnsafeMutablePointer<Float>) {
        let count = spec.shape.reduce(1, *)
        if spec.name.hasSuffix("norm.weight") {
            p.update(repeating: 1, count: count)
        } else if spec.name.hasSuffix(".bias") || spec.id.isBuffer {  // biases, and V3's selection bias, start at 0 as in HF
            p.update(repeating: 0, count: count)
        } else {
            var rng = SplitMix64.stream(seed: seed, index: UInt64(index))
            for j in 0..<count { p[j] = Float(rng.nextGaussian()) * std }
        }
    }
}

extension ParameterSet {
    /// A randomly initialised model in owned memory (see `RandomInit`).
    public static func randomlyInitialized(_ config: ModelConfig, seed: UInt64) -> ParameterSet {
        let set = ParameterSet(family: config.family)
        for (i, spec) in config.parameterSpecs().enumerated() {
            let p = Parameter(spec)
            RandomInit.fill(spec, index: i, seed: seed, std: Float(config.initializerRange), into: p.value)
            set.add(p)
        }
        return set
    }
}

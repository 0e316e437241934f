import ESFTKernels
import Foundation

extension ParameterSet {
    /// A randomly initialised model in owned memory, as HF's `_init_weights` does: weights normal(0,
    /// initializer_range), biases 0, RMSNorm weights 1. Each tensor draws from its own stream (seeded by
    /// the seed and its position), so the result does not depend on threads or visiting order.
    public static func randomlyInitialized(_ config: ModelConfig, seed: UInt64) -> ParameterSet {
        let set = ParameterSet()
        let std = Float(config.initializerRange)
        for (i, spec) in config.parameterSpecs().enumerated() {
            let p = Parameter(name: spec.name, shape: spec.shape)
            if spec.name.hasSuffix("norm.weight") {
                p.value.update(repeating: 1, count: p.count)
            } else if !spec.name.hasSuffix(".bias") {
                var rng = SplitMix64.stream(seed: seed, index: UInt64(i))
                for j in 0..<p.count { p.value[j] = Float(rng.nextGaussian()) * std }
            }
            set.add(p)
        }
        return set
    }
}

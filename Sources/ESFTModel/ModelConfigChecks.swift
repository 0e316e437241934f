import ESFTKernels
import Foundation

/// Values a config.json may hold as numbers but that make no model: checked after every field is read,
/// each error naming the file, the field and the value as written.
enum ModelConfigChecks {
    static func check(_ c: ModelConfig, _ f: JSONReader) throws {
        let source = f.source
        func given(_ key: String) -> String { (try? f.optionalField(key))??.describe ?? "(absent)" }
        func fail(_ key: String, _ what: String) -> ESFTError { ESFTError(ErrorText.field(source, key, "\(given(key)) \(what)")) }

        for (field, limit) in ModelSizes.limits {
            guard let value = try f.optionalField(field)?.int(), value > limit else { continue }
            throw fail(field, "is beyond what any model uses (at most \(limit)); it would imply allocations no machine has")
        }
        if c.nRoutedExperts == 0 && c.expertsPerToken > 0 {
            throw fail("num_experts_per_tok", "routes each token to experts, but n_routed_experts is \(given("n_routed_experts")): "
                       + "a model without routed experts needs num_experts_per_tok 0 (or absent)")
        }
        if c.nRoutedExperts == 0 && c.sharedExperts.count > 0 {
            throw fail("n_shared_experts", "adds shared experts to MoE layers, but n_routed_experts is \(given("n_routed_experts")) (no layer is MoE)")
        }
        if c.expertsPerToken < 0 { throw fail("num_experts_per_tok", "must be ≥ 0") }
        if c.moeIntermediateSize < 0 { throw fail("moe_intermediate_size", "must be ≥ 0") }
        // rms_norm_eps is read as a Double and used as a Float: 1e-50 becomes 0, and 0 divides by zero on an all-zero row.
        if !(c.rmsNormEps > 0) || !c.rmsNormEps.isFinite {
            throw fail("rms_norm_eps", "must be a positive number that fits a Float (RMSNorm divides by √(mean x² + eps); ≤ 0 makes NaN losses)")
        }
        if !c.router.scale.isFinite || !(c.router.scale > 0) {
            throw fail("routed_scaling_factor", "must be a positive number that fits a Float")
        }
        if !(c.ropeTheta > 0) { throw fail("rope_theta", "must be positive") }
        if c.initializerRange < 0 { throw fail("initializer_range", "must be ≥ 0 (it is a standard deviation)") }
        if c.maxPositionEmbeddings <= 0 { throw fail("max_position_embeddings", "must be positive") }
        if case .deepseek(let firstDense, _) = c.moeLayerRule, firstDense > c.numLayers { throw fail("first_k_dense_replace", "exceeds num_hidden_layers \(c.numLayers)") }
        if let y = c.yarn, y.originalMaxPositionEmbeddings <= 0 {
            throw ESFTError(ErrorText.field(source, "rope_scaling.original_max_position_embeddings", "must be positive, got \(y.originalMaxPositionEmbeddings)"))
        }
        let sizes = ModelSizes(c)
        if sizes.tensors > 1e6 {
            throw ESFTError(ErrorText.field(source, sizes.dominantField, "the config implies \(String(format: "%.3g", sizes.tensors)) tensors "
                                            + "(\(ModelSizes.format(sizes.parameters * 4)) as fp32); at most 10^6 tensors are supported"))
        }
    }
}

import ESFTModel

/// What a parameter is, for deciding whether ESFT trains it.
public enum ParameterRole: Equatable, Sendable {
    case routedExpert(layer: Int, expert: Int)
    case sharedExpert(layer: Int)
    /// Attention, norms, router gates, embeddings, lm_head, dense MLPs.
    case nonExpert
}

/// Classifies a Hugging Face tensor name (per-expert names, as `ModelConfig.parameterSpecs()` gives).
public func parameterRole(_ name: String) -> ParameterRole {
    guard let layer = ModelConfig.layerIndex(ofParameter: name) else { return .nonExpert }
    let mlp = "model.layers.\(layer).mlp."
    guard name.hasPrefix(mlp) else { return .nonExpert }
    let rest = name.dropFirst(mlp.count)
    if rest.hasPrefix("shared_experts.") { return .sharedExpert(layer: layer) }
    if rest.hasPrefix("experts.") {
        let id = rest.dropFirst("experts.".count).prefix { $0.isNumber }
        if let e = Int(id) { return .routedExpert(layer: layer, expert: e) }
    }
    return .nonExpert
}

/// The parameters an expert config trains, in the model's parameter order; everything else is frozen.
/// The config should have been validated against the model.
public func trainableParameters(_ config: ExpertConfig, model: ModelConfig) -> [ParameterSpec] {
    let chosen = Dictionary(uniqueKeysWithValues: config.experts.map { ($0.key, Set($0.value)) })
    return model.parameterSpecs().filter { spec in
        switch parameterRole(spec.name) {
        case .routedExpert(let layer, let expert): return chosen[layer]?.contains(expert) ?? false
        case .sharedExpert: return config.sharedExperts
        case .nonExpert: return config.nonExpertModules
        }
    }
}

/// Names of `trainableParameters`: `model.layers.L.mlp.experts.E.{gate,up,down}_proj.weight`, and so on.
public func trainableParameterNames(_ config: ExpertConfig, model: ModelConfig) -> [String] {
    trainableParameters(config, model: model).map(\.name)
}

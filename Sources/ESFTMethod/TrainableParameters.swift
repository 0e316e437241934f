import ESFTModel

/// What a parameter is, for deciding whether ESFT trains it.
public enum ParameterRole: Equatable, Sendable {
    case routedExpert(layer: Int, expert: Int)
    case sharedExpert(layer: Int)
    /// Attention, norms, router gates, embeddings, lm_head, dense MLPs.
    case nonExpert
}

extension ParameterID {
    public var esftRole: ParameterRole {
        if let (layer, expert) = routedExpert { return .routedExpert(layer: layer, expert: expert) }
        if isSharedExpert, let layer { return .sharedExpert(layer: layer) }
        return .nonExpert
    }
}

extension ExpertConfig {
    /// The tensors this config trains; everything else is frozen. The config should have been validated
    /// against the model.
    public func trainableSet(model: ModelConfig) -> TrainableSet {
        let chosen = Dictionary(uniqueKeysWithValues: experts.map { ($0.key, Set($0.value)) })
        return TrainableSet(model.parameterSpecs().map(\.id).filter { id in
            switch id.esftRole {
            case .routedExpert(let layer, let expert): return chosen[layer]?.contains(expert) ?? false
            case .sharedExpert: return sharedExperts
            case .nonExpert: return nonExpertModules
            }
        })
    }
}

/// The parameters an expert config trains, in the model's parameter order.
public func trainableParameters(_ config: ExpertConfig, model: ModelConfig) -> [ParameterSpec] {
    config.trainableSet(model: model).specs(in: model)
}

/// Names of `trainableParameters`: `model.layers.L.mlp.experts.E.{gate,up,down}_proj.weight`, and so on.
public func trainableParameterNames(_ config: ExpertConfig, model: ModelConfig) -> [String] {
    trainableParameters(config, model: model).map(\.name)
}

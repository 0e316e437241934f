/// The tensors a job trains, the same on every rank: a typed value built once (from an expert config,
/// `--full`, or a pattern list) and asked by the model, the trainer and the writers.
public struct TrainableSet: Equatable, Sendable {
    public let ids: Set<ParameterID>

    /// Buffers (DeepSeek-V3's router selection bias) are never trained, whatever asks for them.
    public init<S: Sequence>(_ ids: S) where S.Element == ParameterID { self.ids = Set(ids.filter { !$0.isBuffer }) }

    /// Every tensor of the model (full fine-tuning).
    public static func all(_ config: ModelConfig) -> TrainableSet { TrainableSet(config.parameterSpecs().map(\.id)) }

    public func contains(_ id: ParameterID) -> Bool { ids.contains(id) }
    public var isEmpty: Bool { ids.isEmpty }

    /// The lowest decoder layer backward must reach: 0 when the embedding trains, `numLayers` when only
    /// the final norm and lm_head do.
    public func lowestLayer(numLayers: Int) -> Int {
        if ids.contains(.embedTokens) { return 0 }
        return ids.compactMap(\.layer).min() ?? numLayers
    }

    /// The trained tensors' specs, in the model's parameter order.
    public func specs(in config: ModelConfig) -> [ParameterSpec] { config.parameterSpecs().filter { ids.contains($0.id) } }
}

import ESFTBase
import ESFTModel

extension RelevanceScores {
    /// Checks these scores were measured on `model`: same fingerprint when the scores carry one, and in
    /// any case the same MoE layers, routed experts and top-K. `source` names the scores file,
    /// `modelSource` the model's config.
    /// Returns false when the scores carry no fingerprint (only the shape could be checked).
    @discardableResult
    public func check(against model: ModelConfig, source: String, modelSource: String) throws -> Bool {
        let m = metadata
        if let recorded = m.modelFingerprint {
            let actual = modelFingerprint(config: model)
            guard recorded == actual else {
                throw ESFTError("\(source): metadata.model_fingerprint \(recorded) does not match \(modelSource) (\(actual)); these scores were measured on a different model")
            }
        }
        guard m.experts == model.nRoutedExperts else {
            throw ESFTError("\(source): metadata.experts \(m.experts) differs from n_routed_experts \(model.nRoutedExperts) in \(modelSource)")
        }
        guard m.topK == model.expertsPerToken else {
            throw ESFTError("\(source): metadata.top_k \(m.topK) differs from num_experts_per_tok \(model.expertsPerToken) in \(modelSource)")
        }
        guard m.layers == model.moeLayers else {
            throw ESFTError("\(source): metadata.layers \(ExpertConfig.describe(m.layers)) differ from the MoE layers \(ExpertConfig.describe(model.moeLayers)) of \(modelSource)")
        }
        return m.modelFingerprint != nil
    }
}

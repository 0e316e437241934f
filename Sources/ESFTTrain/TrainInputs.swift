import ESFTData
import ESFTKernels
import ESFTMethod
import ESFTModel
import Foundation

/// Every input of a training job, validated before anything is written (esft train creates --out only after
/// this): the options against the rank count, the token dataset (fully, at open), the model's config against
/// the dataset, the expert config against the model, and the memory a rank will need. One place per check.
public struct TrainInputs {
    public let dataset: TokenDataset
    /// The model's config.json, read before any weight is mapped.
    public let config: ModelConfig

    public init(modelURL: URL, dataPath: String, selection: TrainableSelection, options: TrainOptions, ranks: Int) throws {
        guard options.finalWeights == .last || options.evalEvery > 0 else {
            throw ESFTError("--final best keeps the weights of the evaluation with the lowest validation loss: it needs --eval-every K")
        }
        guard options.batchRows % options.accumulation == 0 else {
            throw ESFTError("--batch-rows \(options.batchRows) must be a multiple of --accumulation \(options.accumulation)")
        }
        let configPath = modelURL.appendingPathComponent("config.json")
        config = try ModelConfig.load(contentsOf: configPath)
        dataset = try TokenDataset(path: dataPath)
        guard dataset.metadata.vocabSize == config.vocabSize else {
            throw ESFTError("\(dataPath): the dataset's vocabulary (\(dataset.metadata.vocabSize) ids, tokenizer \(dataset.metadata.tokenizer)) differs from the model's vocab_size \(config.vocabSize) in \(modelURL.path)")
        }
        guard config.nRoutedExperts == 0 || ranks <= config.nRoutedExperts else {
            throw ESFTError("\(ranks) ranks but only \(config.nRoutedExperts) routed experts per layer: use at most \(config.nRoutedExperts) ranks")
        }
        guard !dataset.trainRows.isEmpty else { throw ESFTError("\(dataPath): no training rows") }
        if config.balanceLoss == .none && options.auxAlpha > 0 {
            throw ESFTError("--aux-alpha \(options.auxAlpha): \(configPath.path): a \(config.family.rawValue) model has no auxiliary balance loss (its router balances through e_score_correction_bias); use --aux-alpha 0")
        }
        guard dataset.seqLen <= config.maxPositionEmbeddings else {
            throw ESFTError("\(dataPath): rows of \(dataset.seqLen) tokens do not fit the model's max_position_embeddings \(config.maxPositionEmbeddings); prepare the data with a smaller --seq-len")
        }
        let trainable: TrainableSet
        switch selection {
        case .full: trainable = .all(config)
        case .experts(let cfg, let source):
            try cfg.validate(against: config, source: source)
            trainable = cfg.trainableSet(model: config)
        }
        try Self.checkMemory(config, trainable: trainable, options: options, ranks: ranks, seqLen: dataset.seqLen, source: configPath.path)
    }

    /// A rank holds its trainable tensors four times (value, gradient, two AdamW moments; routed experts are
    /// shared out over the ranks, the rest replicated) and a micro-batch's activations (ModelSizes.batchBytes).
    static func checkMemory(_ config: ModelConfig, trainable: TrainableSet, options: TrainOptions, ranks: Int, seqLen: Int,
                            source: String) throws {
        var replicated = 0.0, experts = 0.0
        for spec in trainable.specs(in: config) {
            if spec.id.routedExpert != nil { experts += Double(spec.count) } else { replicated += Double(spec.count) }
        }
        let sizes = ModelSizes(config)
        let state = (replicated + experts / Double(ranks)) * 16
        try sizes.requireMemory(state, for: "the trainable tensors with their gradients and AdamW moments", source: source)
        let rows = (options.batchRows / options.accumulation + ranks - 1) / ranks
        try sizes.requireBatchMemory(rows: rows, seqLen: seqLen, training: true,
                                     what: "a micro-batch of \(rows) rows (--batch-rows/--accumulation per rank) of \(seqLen) tokens", source: source)
    }
}

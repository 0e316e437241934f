import ESFTData
import ESFTEval
import ESFTKernels
import ESFTMethod
import ESFTModel
import ESFTStore
import Foundation

/// The model, trained tensors and tokenizer of `esft generate` and `esft eval`, from their shared options:
/// --model DIR [--trained FILE|CHECKPOINT_DIR] --tokenizer T [--bos-token/--eos-token/--pad-token TOK]
/// [--max-new-tokens N] [--batch B] [--no-bos] [--threads T].
struct InferenceSetup {
    static let optionsHelp = """
      --model DIR           esft model directory (or a Hugging Face one, without --trained); every expert is
                            mapped (each rank holds the whole model: records, not experts, are split)
      --trained FILE|DIR    trained tensors to use instead of the stored ones: esft train's trained.safetensors
                            or a checkpoint folder (mapped read-only, nothing copied)
      --tokenizer T         'bytes' or a tokenizer.json (or a directory holding one): the model's (needed for
                            text; esft generate --prompt-ids runs without one)
      --bos-token/--eos-token/--pad-token TOK   special tokens by spelling or id (as in esft data prepare);
                            generation stops at EOS
      --max-new-tokens N    new tokens per prompt at most (default 128, the reference's eval default)
      --batch B             prompts decoded together (default 8): one KV cache slot each
      --no-bos              do not put BOS before each prompt (default: BOS first, as the reference's pipeline)
      --threads T           kernel and GEMM threads per rank (default: the cores it may use)
    """

    let modelPath: String, trainedPath: String?, tokenizerSpec: String?
    let bos: String?, eos: String?, pad: String?
    var completion = Completer.Options()
    let threads: Int?

    /// Reads the shared options (before `args.finish()`).
    init(_ args: inout Arguments) throws {
        modelPath = try args.required("--model")
        trainedPath = try args.option("--trained")
        tokenizerSpec = try args.option("--tokenizer")
        bos = try args.option("--bos-token"); eos = try args.option("--eos-token"); pad = try args.option("--pad-token")
        completion.maxNewTokens = try args.int("--max-new-tokens", default: 128, min: 1)!
        completion.batch = try args.int("--batch", default: 8, min: 1)!
        completion.addBOS = !args.flag("--no-bos")
        threads = try args.int("--threads", min: 1)
    }

    /// Opens everything (inputs are all checked here, before any output exists).
    func load() throws -> (model: MoETransformer, tokenizer: LoadedTokenizer?, description: String) {
        Threads.set(threads ?? Threads.defaultCount())
        let url = URL(fileURLWithPath: modelPath)
        var loaded = try LoadedModel.open(url)
        if let trainedPath {
            guard LoadedModel.isModelDirectory(url) else {
                throw ESFTError("--trained needs an esft model directory (esft import); \(modelPath) is a Hugging Face directory")
            }
            let trained = try TrainedTensors(trainedPath, model: try ModelDirectory(url: url))
            loaded = try loaded.overlaying(trained, fingerprint: modelFingerprint(config: loaded.config))
        }
        let tokenizer = try tokenizerSpec.map { try LoadedTokenizer.load($0, bos: bos, eos: eos, pad: pad) }
        let model = try MoETransformer(config: loaded.config, parameters: loaded.parameters)
        return (model, tokenizer, loaded.format)
    }
}

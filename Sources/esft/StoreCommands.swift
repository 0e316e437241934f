import ESFTKernels
import ESFTMethod
import ESFTModel
import ESFTStore
import Foundation

/// Prints progress of long work on stderr, so stdout keeps the results.
func progressLine(_ command: String) -> ProgressReporter {
    { FileHandle.standardError.write("esft \(command): \($0)\n".data(using: .utf8)!) }
}

enum ImportCommand {
    static let help = """
    Usage: esft import HF_DIR OUT_DIR [--dtype fp32|bf16] [--expert-shards N]

    Converts a Hugging Face checkpoint of a supported family (deepseek_v2, deepseek_v3 and kimi_k2, qwen3_moe,
    qwen2_moe, olmoe, mixtral: config.json + safetensors, single file or sharded with
    model.safetensors.index.json; experts per expert or fused 3-D; FP8 block-scaled as DeepSeek-V3 ships it,
    dequantized with its weight_scale_inv blocks) into an esft model directory: config.json,
    model.h5 (every non-expert tensor) and N expert shard files, each holding a contiguous range of expert
    ids for every MoE layer. Datasets are contiguous, uncompressed, allocated early and page-aligned, so
    training maps frozen tensors instead of loading them. Tensors are streamed one at a time: memory stays
    near the largest tensor. OUT_DIR must not exist; it appears only when complete.

      --dtype D           fp32 or bf16 (default: bf16 if every matrix in the checkpoint is BF16 or FP8, else
                          fp32; DeepSeek-V3's router weight and selection bias stay float32 either way)
      --expert-shards N   expert shard files (default 1; use one per expert-parallel rank or node)
    """

    static func run(_ argv: [String]) throws {
        var args = Arguments(argv, command: "import")
        if args.wantsHelp { print(help); return }
        let dtype = try args.option("--dtype").map(StoredDType.init(flag:))
        let shards = try args.int("--expert-shards", default: 1, min: 1)!
        let positional = try args.positional(2, names: "HF_DIR OUT_DIR")
        try args.finish()
        try OutputGuard.check(outputs: [.init("OUT_DIR", positional[1])], inputs: [.init("HF_DIR", positional[0])])
        let start = Date()
        let (count, chosen) = try ModelImport.run(from: URL(fileURLWithPath: positional[0]), to: URL(fileURLWithPath: positional[1]),
                                                  dtype: dtype, expertShards: shards, progress: progressLine("import"))
        print(String(format: "imported %d tensors as %@ into %@ in %.1f s; %@", count, chosen.rawValue, positional[1],
                     Date().timeIntervalSince(start), MemoryUsage.current().summary))
    }
}

enum InitCommand {
    static let help = """
    Usage: esft init CONFIG.json OUT_DIR [--seed S] [--dtype fp32|bf16] [--expert-shards N]

    Writes a randomly initialised esft model directory for a config of any supported family (see configs/): weights
    normal(0, initializer_range), RMSNorm weights 1, biases 0, as Hugging Face initialises them. The same
    seed gives the same weights on any machine. OUT_DIR must not exist.

      --seed S            random seed (default 0)
      --dtype D           fp32 (default) or bf16
      --expert-shards N   expert shard files (default 1)
    """

    static func run(_ argv: [String]) throws {
        var args = Arguments(argv, command: "init")
        if args.wantsHelp { print(help); return }
        let seed = UInt64(try args.int("--seed", default: 0)!)
        let dtype = try args.option("--dtype").map(StoredDType.init(flag:)) ?? .fp32
        let shards = try args.int("--expert-shards", default: 1, min: 1)!
        let positional = try args.positional(2, names: "CONFIG.json OUT_DIR")
        try args.finish()
        try OutputGuard.check(outputs: [.init("OUT_DIR", positional[1])], inputs: [.init("CONFIG.json", positional[0])])
        let configURL = URL(fileURLWithPath: positional[0])
        let config = try ModelConfig.load(contentsOf: configURL)
        // Init holds one tensor at a time (fp32) and writes them all: both must fit before anything is created.
        let sizes = ModelSizes(config), out = URL(fileURLWithPath: positional[1])
        try sizes.requireMemory(sizes.largestTensor * 4, for: "the largest tensor (fp32)", source: configURL.path)
        try sizes.requireDisk(sizes.parameters * Double(dtype == .fp32 ? 4 : 2), output: out, source: configURL.path)
        try ModelInit.run(config: config, configJSON: try Data(contentsOf: configURL), to: URL(fileURLWithPath: positional[1]),
                          seed: seed, dtype: dtype, expertShards: shards, progress: progressLine("init"))
        let count = config.parameterSpecs().reduce(0) { $0 + $1.shape.reduce(1, *) }
        print("initialised \(count) parameters (seed \(seed), \(dtype.rawValue)) in \(positional[1])")
    }
}

enum ExportCommand {
    static let help = """
    Usage: esft export MODEL_DIR OUT [--trained FILE] [--format safetensors|hdf5] [--adapter --experts CFG.json]
                       [--dtype fp32|bf16] [--max-shard-size GB] [--expert-shards N]

    Writes an esft model directory, with trained tensors merged in, in a form other tools load:
      safetensors (default)  a Hugging Face directory: config.json, model-0000i-of-0000N.safetensors and
                             model.safetensors.index.json in the family's own tensor names (transformers'
                             from_pretrained loads it)
      hdf5                   a new esft model directory
      --adapter              the ESFT reference's adapter layout instead: expert_cfg.json and a
                             model.safetensors holding only the trained tensors under their HF names
                             (the reference's esft.add_adapter / load_esft_model read it); needs
                             --trained and --experts

      --trained FILE      trained tensors (F32 safetensors by HF name, as esft train writes them), or a
                          checkpoint folder OUT/checkpoints/step-NNNNNN (its weights; export without finishing)
      --experts CFG       the expert config the tensors were trained with (for --adapter; default: the one
                          esft train recorded in the trained file, which must agree with CFG if both exist)
      --dtype D           output dtype (default: the model's)
      --max-shard-size G  safetensors shard size limit in GB (default 5)
      --expert-shards N   expert shard files for --format hdf5 (default: as the input)
    OUT must not exist; it appears only when complete.
    """

    static func run(_ argv: [String]) throws {
        var args = Arguments(argv, command: "export")
        if args.wantsHelp { print(help); return }
        let trainedPath = try args.option("--trained")
        let format = try args.option("--format") ?? "safetensors"
        let adapter = args.flag("--adapter")
        let expertsPath = try args.option("--experts")
        let dtype = try args.option("--dtype").map(StoredDType.init(flag:))
        let maxShardGB = try args.double("--max-shard-size") ?? 5
        let shards = try args.int("--expert-shards", min: 1)
        let positional = try args.positional(2, names: "MODEL_DIR OUT")
        try args.finish()
        try OutputGuard.check(outputs: [.init("OUT", positional[1])],
                              inputs: [("MODEL_DIR", positional[0]), ("--trained", trainedPath), ("--experts", expertsPath)]
                                  .compactMap { n, p in p.map { .init(n, $0) } })
        guard ["safetensors", "hdf5"].contains(format) else { throw ESFTError("--format must be safetensors or hdf5, got '\(format)'") }
        guard maxShardGB > 0, maxShardGB <= 1e9 else { throw ESFTError("--max-shard-size must be in (0, 1e9] GB, got \(maxShardGB)") }
        let model = try ModelDirectory(url: URL(fileURLWithPath: positional[0]))
        let out = URL(fileURLWithPath: positional[1])
        let trained = try trainedPath.map { try TrainedTensors($0, model: model) }
        if let trained, let trainedPath, let recorded = trained.metadata["model_fingerprint"],
           recorded != modelFingerprint(config: model.config) {
            throw ESFTError("\(trainedPath): trained for a different model (fingerprint \(recorded), \(positional[0]) has \(modelFingerprint(config: model.config)))")
        }
        if adapter {
            guard let trained, let trainedPath else { throw ESFTError("--adapter needs --trained FILE (the tensors esft train wrote)") }
            let recorded = try trained.metadata["expert_config"].map { try ExpertConfig(jsonData: Data($0.utf8), source: "\(trainedPath) (metadata)") }
            let given = try expertsPath.map { try ExpertConfig.load(contentsOf: URL(fileURLWithPath: $0)) }
            guard let cfg = given ?? recorded else {
                throw ESFTError("--adapter needs --experts CFG.json: \(trainedPath) records no expert config")
            }
            if let given, let recorded, given != recorded {
                throw ESFTError("\(expertsPath!): differs from the expert config \(trainedPath) was trained with")
            }
            try cfg.validate(against: model.config, source: expertsPath ?? trainedPath)
            let expected = Set(trainableParameterNames(cfg, model: model.config)), present = Set(trained.tensors.keys)
            guard expected == present else {
                let missing = expected.subtracting(present).sorted().first, extra = present.subtracting(expected).sorted().first
                throw ESFTError("\(trainedPath): its tensors do not match the expert config (\(missing.map { "missing \($0)" } ?? "extra \(extra!)"))")
            }
            try ModelExport.adapter(trained: trained, expertConfigJSON: cfg.jsonData(), to: out)
            print("wrote adapter with \(trained.tensors.count) tensors to \(out.path)")
            return
        }
        if format == "hdf5" {
            try ModelExport.modelDirectory(model: model, trained: trained, to: out, dtype: dtype, expertShards: shards,
                                           progress: progressLine("export"))
        } else {
            try ModelExport.safetensors(model: model, trained: trained, to: out, dtype: dtype,
                                        maxShardBytes: Int(maxShardGB * 1e9), progress: progressLine("export"))
        }
        print("exported \(positional[0])\(trained.map { " with \($0.tensors.count) trained tensors" } ?? "") to \(out.path) (\(format))")
    }
}

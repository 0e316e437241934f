import ESFTKernels
import ESFTMethod
import ESFTModel
import ESFTStore
import Foundation

enum InspectCommand {
    static let help = """
    Usage: esft inspect MODEL_DIR [--experts CFG.json] [--json]
           esft inspect CHECKPOINT_DIR [--json]

    Describes an esft model directory (or a Hugging Face one): architecture, expert shards, dtype,
    parameter counts (total, per routed expert, routed, shared, non-expert) and bytes on disk. With an
    expert config (from esft select), also the trainable parameters it implies and the optimizer memory
    training needs: 16 bytes per trainable parameter (fp32 weight copy, gradient, two AdamW moments).
    A checkpoint folder (OUT/checkpoints/step-NNNNNN from esft train --checkpoint-every) is described and
    every array in it checked against the manifest's checksum; a corrupt or incomplete one is an error.
    """

    static func run(_ argv: [String]) throws {
        var args = Arguments(argv, command: "inspect")
        if args.wantsHelp { print(help); return }
        let expertsPath = try args.option("--experts")
        let json = args.flag("--json")
        let dirPath = try args.positional(1, names: "MODEL_DIR")[0]
        try args.finish()
        let url = URL(fileURLWithPath: dirPath)
        if InspectCheckpoint.isCheckpoint(url) { return try InspectCheckpoint.run(url, json: json) }
        let isESFT = LoadedModel.isModelDirectory(url)
        let config: ModelConfig
        var dtype = "", shards: [String] = []
        if isESFT {
            let dir = try ModelDirectory(url: url)
            _ = try dir.tensorInfos()  // every tensor present, shaped and mappable
            config = dir.config; dtype = dir.dtype.rawValue
            shards = zip(dir.files.dropFirst(), dir.expertRanges).map { "\($0) (experts \($1.lowerBound)..<\($1.upperBound))" }
        } else {
            config = try HFCheckpoint(directory: url).config
            dtype = "safetensors"
        }
        let specs = config.parameterSpecs()
        func count(_ filter: (ParameterSpec) -> Bool) -> Int { specs.filter(filter).reduce(0) { $0 + $1.shape.reduce(1, *) } }
        let total = count { _ in true }
        let routed = count { $0.id.routedExpert != nil }
        let shared = count { $0.id.isSharedExpert }
        let perExpert = 3 * config.moeIntermediateSize * config.hiddenSize
        let onDisk = (try FileManager.default.contentsOfDirectory(atPath: url.path)).reduce(0) { sum, f in
            sum + ((try? FileManager.default.attributesOfItem(atPath: url.appendingPathComponent(f).path)[.size] as? Int) ?? 0)
        }
        var result: [String: Any] = [
            "layers": config.numLayers, "moe_layers": config.moeLayers, "routed_experts_per_layer": config.nRoutedExperts,
            "experts_per_token": config.expertsPerToken, "shared_experts": config.sharedExperts.count, "hidden_size": config.hiddenSize,
            "vocab_size": config.vocabSize, "dtype": dtype, "expert_shards": shards,
            "parameters": ["total": total, "per_routed_expert": perExpert, "routed_experts": routed, "shared_experts": shared,
                           "non_expert": total - routed - shared],
            "bytes_on_disk": onDisk,
        ]
        var lines = [
            "\(dirPath): \(isESFT ? "esft model directory" : "Hugging Face directory"), dtype \(dtype)",
            "  layers \(config.numLayers) (MoE: \(config.moeLayers.count), dense: \(config.numLayers - config.moeLayers.count)); hidden \(config.hiddenSize); vocab \(config.vocabSize)",
            "  routed experts \(config.nRoutedExperts) per MoE layer, top-\(config.expertsPerToken); shared experts \(config.sharedExperts.count)",
            "  parameters: total \(total); routed experts \(routed) (\(perExpert) each); shared \(shared); non-expert \(total - routed - shared)",
            String(format: "  bytes on disk: %.1f MiB", Double(onDisk) / 1048576),
        ] + shards.map { "  shard \($0)" }
        if let expertsPath {
            let cfg = try ExpertConfig.load(contentsOf: URL(fileURLWithPath: expertsPath))
            try cfg.validate(against: config, source: expertsPath)
            let trainable = trainableParameters(cfg, model: config).reduce(0) { $0 + $1.shape.reduce(1, *) }
            let bytes = trainable * SelectionReport.optimizerBytesPerParameter
            result["expert_config"] = ["path": expertsPath, "experts": cfg.expertCount, "trainable_parameters": trainable,
                                       "optimizer_state_bytes": bytes]
            lines.append(String(format: "  expert config %@: %ld experts, %ld trainable parameters (%.2f%%), optimizer state %.1f MiB (16 B/parameter)",
                                expertsPath, cfg.expertCount, trainable, 100 * Double(trainable) / Double(total), Double(bytes) / 1048576))
        }
        if json {
            print(String(decoding: try JSONSerialization.data(withJSONObject: result, options: [.sortedKeys, .prettyPrinted]), as: UTF8.self))
        } else {
            print(lines.joined(separator: "\n"))
        }
    }
}

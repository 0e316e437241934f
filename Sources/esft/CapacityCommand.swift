import ESFTData
import ESFTKernels
import ESFTMethod
import ESFTModel
import ESFTStore
import ESFTTrain
import Foundation

/// `esft plan` (capacity form): see PlanCommand.help.
enum CapacityCommand {
    static func run(_ args: inout Arguments) throws {
        let modelPath = try args.required("--model")
        let expertsPath = try args.option("--experts"), full = args.flag("--full")
        let ranks = try args.int("--ranks", default: 1, min: 1)!
        let threads = try args.int("--threads", default: 1, min: 1)!
        let batchRows = try args.int("--batch-rows", default: 8, min: 1)!
        let accumulation = try args.int("--accumulation", default: 1, min: 1)!
        let dataPath = try args.option("--data")
        var seqLen = try args.int("--seq-len", min: 1)
        let evalEvery = try args.int("--eval-every", default: 0, min: 0)!
        let kind = try PlacementKind.parse(try args.option("--placement") ?? "contiguous")
        let routingArg = try args.option("--routing") ?? "uniform"
        let nodeMemory = try args.option("--node-memory").map { try parseBytes($0, option: "--node-memory") }
        let perNode = try args.int("--ranks-per-node", default: 1, min: 1)!
        let dtypeArg = try args.option("--dtype")
        let perLayer = args.flag("--per-layer"), recompute = args.flag("--recompute")
        try args.finish()
        guard (expertsPath != nil) != full else { throw ESFTError("plan: give exactly one of --experts CFG.json or --full") }

        // The model: a directory (esft or Hugging Face) or a config.json.
        let modelURL = URL(fileURLWithPath: modelPath)
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: modelURL.path, isDirectory: &isDir) else { throw ESFTError("plan: \(modelPath): no such file or directory") }
        let config = try ModelConfig.load(contentsOf: isDir.boolValue ? modelURL.appendingPathComponent("config.json") : modelURL)
        var bytesPerElement = 2
        if let dtypeArg { bytesPerElement = try StoredDType(flag: dtypeArg) == .fp32 ? 4 : 2 } else if isDir.boolValue && LoadedModel.isModelDirectory(modelURL) {
            bytesPerElement = try ModelDirectory(url: modelURL).dtype == .fp32 ? 4 : 2
        }
        let trainable: TrainableSet, trainableExperts: [Int: [Int]]
        if let expertsPath {
            let cfg = try ExpertConfig.load(contentsOf: URL(fileURLWithPath: expertsPath))
            try cfg.validate(against: config, source: expertsPath)
            trainable = cfg.trainableSet(model: config); trainableExperts = cfg.experts
        } else {
            trainable = .all(config)
            trainableExperts = Dictionary(uniqueKeysWithValues: config.moeLayers.map { ($0, Array(0..<config.nRoutedExperts)) })
        }
        var datasetRows = 0, datasetSamples = 0
        if let dataPath {
            let data = try TokenDataset(path: dataPath)
            datasetRows = data.rows; datasetSamples = data.samples.count
            if let s = seqLen, s != data.seqLen { throw ESFTError("plan: --seq-len \(s) differs from \(dataPath)'s rows of \(data.seqLen) tokens") }
            seqLen = data.seqLen
        }
        guard let seqLen else { throw ESFTError("plan: --seq-len is required (or --data D.h5, whose rows give it)") }
        guard ranks <= max(config.nRoutedExperts, 1) else { throw ESFTError("plan: \(ranks) ranks but only \(config.nRoutedExperts) routed experts per layer") }

        // Routing: uniform, a scores file, or a directory of routing logs.
        let routing: RoutingAssumption
        var tokens: [Int: LayerRouting] = [:]
        if routingArg == "uniform" {
            routing = .uniform
        } else {
            let url = URL(fileURLWithPath: routingArg)
            var dir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: url.path, isDirectory: &dir) else { throw ESFTError("plan: --routing \(routingArg): no such file or directory (or say uniform)") }
            if dir.boolValue {
                tokens = try ReferenceRoutingLogs(directory: url, topK: config.expertsPerToken, experts: config.nRoutedExperts).layerRoutings()
                routing = .tokens(tokens)
            } else {
                let scores = try RelevanceScores.load(contentsOf: url)
                guard scores.metadata.experts == config.nRoutedExperts, scores.metadata.topK == config.expertsPerToken else {
                    throw ESFTError("\(routingArg): scores of top-\(scores.metadata.topK) of \(scores.metadata.experts) experts; the model routes top-\(config.expertsPerToken) of \(config.nRoutedExperts)")
                }
                routing = .inclusion(scores.token.mapValues { $0.map { $0 * Double(config.expertsPerToken) } })
            }
        }
        if kind == .affinity && tokens.isEmpty { throw ESFTError("plan: --placement affinity needs --routing LOGS_DIR (the routing logs it groups experts by)") }
        let placement = try PlacementPlanner().plan(kind, experts: config.nRoutedExperts, ranks: ranks, moeLayers: config.moeLayers,
                                                    trainable: trainableExperts, routing: tokens)
        var job = CapacityPlan.Job(config: config, trainable: trainable, placement: placement)
        job.ranks = ranks; job.threads = threads; job.batchRows = batchRows; job.seqLen = seqLen; job.accumulation = accumulation
        job.validation = evalEvery > 0; job.recompute = recompute; job.routing = routing; job.storedBytesPerElement = bytesPerElement
        job.datasetRows = datasetRows; job.datasetSamples = datasetSamples
        let plan = try CapacityPlan(job)
        report(plan, routing: routingArg, kind: kind, nodeMemory: nodeMemory, perNode: perNode, datasetKnown: dataPath != nil, perLayer: perLayer)
        if let nodeMemory {
            if nodeNeed(plan, perNode: perNode) > nodeMemory { fflush(stdout); exit(3) }   // a plan that does not fit: status 3, for job scripts
        }
    }

    static func mib(_ x: Double) -> String { String(format: "%.1f MiB", x / 1048576) }

    static func report(_ plan: CapacityPlan, routing: String, kind: PlacementKind, nodeMemory: Double?, perNode: Int, datasetKnown: Bool,
                       perLayer: Bool) {
        let j = plan.job
        print("esft plan: \(j.ranks) rank(s) × \(j.threads) thread(s), \(j.batchRows) rows × \(j.seqLen) tokens per step in \(j.accumulation) micro-batch(es), placement \(kind.rawValue), routing \(routing)")
        if !datasetKnown { print("(no --data: the dataset's memory is not counted)") }
        func col(_ s: String, _ w: Int) -> String { String(repeating: " ", count: max(0, w - s.count)) + s }
        let widths = [4, 17, 14, 14, 14, 14, 14, 16, 15]
        print(zip(["rank", "trainable params", "optimizer", "activations", "workspaces", "dataset+norms", "runtime", "anonymous total", "mapped frozen"], widths)
                .map { col($0, $1) }.joined(separator: " "))
        for (r, x) in plan.perRank.enumerated() {
            let cells = ["\(r)", "\(x.trainableParameters)", mib(x.optimizerBytes), mib(x.activationBytes), mib(x.workspaceBytes),
                         mib(x.datasetBytes + x.widenedBytes), mib(x.runtimeBytes), mib(x.anonymousBytes), mib(x.mappedFrozenBytes)]
            print(zip(cells, widths).map { col($0, $1) }.joined(separator: " "))
        }
        if plan.collectives.isEmpty {
            print("collectives: none (one rank)")
        } else {
            print(String(format: "collectives per step (all ranks): %.0f bytes in all, %.0f expert dispatch; rows per token per MoE layer %.3f",
                         plan.bytesPerStep, plan.dispatchBytesPerStep,
                         plan.rowsPerToken.values.reduce(0, +) / Double(max(plan.rowsPerToken.count, 1))))
            // Summed over MoE layers ("layer N " dropped) unless --per-layer.
            var order: [String] = [], sums: [String: Double] = [:]
            for c in plan.collectives where c.bytes > 0 {
                let key = perLayer ? c.tag : c.tag.replacingOccurrences(of: #"layer \d+ "#, with: "all layers ", options: .regularExpression)
                if sums[key] == nil { order.append(key) }
                sums[key, default: 0] += c.bytes
            }
            // `!`: `order` lists exactly the keys of `sums`.
            for key in order { print("  " + key.padding(toLength: 50, withPad: " ", startingAt: 0) + String(format: "%16.0f bytes", sums[key]!)) }
        }
        if let nodeMemory {
            let need = nodeNeed(plan, perNode: perNode)
            print(String(format: "node memory %@: %d rank(s) per node need %@ anonymous (the %d largest rank(s)) → %@", mib(nodeMemory), perNode, mib(need), perNode,
                         need <= nodeMemory ? "fits" : "does NOT fit"))
            print("  (mapped frozen weights come on top as page cache, shared by the ranks of a node)")
        }
    }

    /// Anonymous bytes of the node holding the `perNode` largest ranks: an upper bound whichever ranks share a
    /// node (ranks differ when experts or rows are uneven: one row on 2 ranks leaves rank 1 only its experts).
    static func nodeNeed(_ plan: CapacityPlan, perNode: Int) -> Double {
        let sorted = plan.perRank.map(\.anonymousBytes).sorted(by: >)
        // More ranks per node than the job has: every rank of the job shares one node.
        return sorted.prefix(perNode).reduce(0, +)
    }

    /// "24GiB", "512MiB", "1.5GB", "1000000" (bytes).
    static func parseBytes(_ s: String, option: String) throws -> Double {
        let units: [(String, Double)] = [("GiB", 1073741824), ("MiB", 1048576), ("KiB", 1024), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3), ("G", 1073741824), ("M", 1048576), ("B", 1)]
        for (u, f) in units where s.hasSuffix(u) {
            if let v = Double(s.dropLast(u.count)), v > 0 { return v * f }
        }
        if let v = Double(s), v > 0 { return v }
        throw ESFTError("plan: \(option) must be a size like 24GiB or 512MiB, got '\(s)'")
    }
}

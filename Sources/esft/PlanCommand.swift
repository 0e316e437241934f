import ESFTKernels
import ESFTMethod
import ESFTModel
import ESFTTrain
import Foundation

/// `esft plan`: before a job, what it needs per rank (memory, mapped bytes, bytes per collective); or,
/// with --routing-logs, how each placement moves recorded routing.
enum PlanCommand {
    static let help = """
    Usage: esft plan --model M (--experts CFG.json | --full) --ranks R --batch-rows B --seq-len L
                     [--threads T] [--accumulation A] [--placement P] [--routing uniform|SCORES.json|LOGS_DIR]
                     [--data D.h5] [--eval-every K] [--dtype bf16|fp32] [--node-memory 24GiB [--ranks-per-node N]]
                     [--per-layer] [--recompute]
           esft plan --routing-logs DIR [--ranks 2,4,8] [--placement contiguous,balanced,affinity]
                     [--experts CFG.json] [--hidden D] [--load-tolerance F] [--holdout]

    Capacity plan (first form): predicts, per rank of an `esft train` job with these options, the anonymous
    memory (trainable weights, gradients, AdamW moments, activations kept for backward, workspaces,
    runtime), the mapped frozen bytes its forward and backward touch, and the bytes each collective moves
    per optimizer step. docs/performance.md says how close the predictions came to measured runs.

      --model M          esft model directory, Hugging Face directory, or a config.json
      --experts CFG      expert config (esft select); or --full
      --ranks R          ranks of the job (default 1)
      --batch-rows B     rows per optimizer step over all ranks (as esft train; default 8)
      --seq-len L        tokens per row (the dataset's)
      --threads T        threads per rank, as the job will run them (default 1): experts' backward keeps
                         one scratch set per thread (OpenBLAS; oneDNN runs experts one at a time)
      --accumulation A   micro-batches per step (default 1)
      --placement P      contiguous (default), balanced or affinity (affinity needs --routing LOGS_DIR)
      --routing R        how tokens choose experts, for the dispatch bytes: uniform (default: every
                         expert equally likely, a token's top-k distinct), a scores file (esft score: each
                         expert's token selection ratio), or reference-format routing logs (the run's own
                         routing: exact rows per (token, rank))
      --data D.h5        the token dataset: its memory counts, and its rows give --seq-len
      --eval-every K     validation during training (its forward sizes the shared buffers too)
      --recompute        activation checkpointing, as esft train --recompute
      --dtype D          stored weights' dtype for a config.json (default bf16; a model directory says)
      --per-layer        list each MoE layer's collectives (default: summed over layers)
      --node-memory M    memory per node (e.g. 24GiB, 512MiB); prints whether the ranks on one node fit,
                         with --ranks-per-node N (default 1); exit status 3 when they do not

    Placement table (second form): from routing logs (expert_weights_<layer>.txt, one per MoE layer, as the
    ESFT reference writes them), the dispatch rows per token per layer under each placement for each rank
    count, against one row per (token, expert) as the reference's scheme sends.

      --routing-logs DIR   the logs (top-k 6 of 64 experts, DeepSeek-V2-Lite, unless --top-k/--experts-per-layer)
      --experts CFG        the expert config the balanced placement spreads (default DIR/expert_config.json)
      --hidden D           hidden size for bytes per row (default 2048, DeepSeek-V2-Lite)
      --load-tolerance F   affinity: a rank's share of routed (token, expert) pairs may exceed the mean by
                           this fraction (default 0.1)
      --holdout            plan on the first half of the samples, measure on the second (otherwise the
                           placements are measured on the routing they were planned from)
    """

    static func run(_ argv: [String]) throws {
        var args = Arguments(argv, command: "plan")
        if args.wantsHelp { print(help); return }
        if let logs = try args.option("--routing-logs") { return try placementTable(logs, &args) }
        try CapacityCommand.run(&args)
    }

    static func placementTable(_ dir: String, _ args: inout Arguments) throws {
        let ranksList = try (args.option("--ranks") ?? "2,4,8").split(separator: ",").map { s -> Int in
            guard let r = Int(s), r >= 1 else { throw ESFTError("plan: --ranks must be a comma-separated list of integers ≥ 1, got '\(s)'") }
            return r
        }
        let kinds = try (args.option("--placement") ?? "contiguous,balanced,affinity").split(separator: ",").map { try PlacementKind.parse(String($0)) }
        let expertsPath = try args.option("--experts")
        let hidden = try args.int("--hidden", default: 2048, min: 1)!
        let topK = try args.int("--top-k", default: 6, min: 1)!
        let experts = try args.int("--experts-per-layer", default: 64, min: 1)!
        var planner = PlacementPlanner()
        if let t = try args.double("--load-tolerance") {
            guard t >= 0 else { throw ESFTError("plan: --load-tolerance must be ≥ 0, got \(t)") }
            planner.loadTolerance = t
        }
        let holdout = args.flag("--holdout")
        try args.finish()
        let url = URL(fileURLWithPath: dir)
        let logs = try ReferenceRoutingLogs(directory: url, topK: topK, experts: experts)
        var routing = try logs.layerRoutings(), evaluated = routing
        if holdout {
            // Plan on the first half of the samples, measure on the rest: rows on routing the planner never saw.
            let samples = logs.logs[0].tokensPerSample, half = samples.count / 2
            guard half >= 1 else { throw ESFTError("plan: --holdout needs at least 2 samples (lines) in \(dir)") }
            let cut = samples.prefix(half).reduce(0, +) * topK
            for (l, r) in routing {
                routing[l] = try LayerRouting(layer: l, experts: experts, k: topK, ids: Array(r.ids[..<cut]))
                evaluated[l] = try LayerRouting(layer: l, experts: experts, k: topK, ids: Array(r.ids[cut...]))
            }
        }
        let cfgURL = expertsPath.map { URL(fileURLWithPath: $0) } ?? url.appendingPathComponent("expert_config.json")
        var trainable: [Int: [Int]]?
        if FileManager.default.fileExists(atPath: cfgURL.path) {
            let cfg = try ExpertConfig.load(contentsOf: cfgURL)
            try cfg.validate(moeLayers: logs.layers, experts: experts, source: cfgURL.path)
            trainable = cfg.experts
        } else if expertsPath != nil || kinds.contains(.balanced) {
            throw ESFTError("plan: \(cfgURL.path): no expert config (the balanced placement spreads its experts; give --experts CFG.json)")
        }
        let tokens = logs.logs[0].tokens
        let rowBytes = PlacementEvaluation.bytesPerRow(hidden: hidden, k: topK)
        print("routing logs \(url.path): \(logs.layers.count) MoE layers, \(tokens) tokens each, top-\(topK) of \(experts) experts"
              + (holdout ? "; planned on the first half of the samples (\(routing[logs.layers[0]]!.tokens) tokens), measured on the rest" : ""))
        print("bytes per dispatched row over a training step (fp32, D = \(hidden), K = \(topK)): \(rowBytes); tokens spread evenly over ranks")
        print("ranks  placement             rows/token/layer  off-rank KB/token/layer  rows vs contiguous  max load/mean  max trainable/mean")
        // `!` (here and for routing[]): both are filled for every layer of `logs` above.
        let layerList = logs.layers.map { evaluated[$0]! }
        for r in ranksList {
            guard r <= experts else { throw ESFTError("plan: --ranks \(r) exceeds the \(experts) experts per layer") }
            let perPair = PlacementEvaluation(perPairWithK: topK, ranks: r)
            var rows: [PlacementEvaluation] = [perPair]
            for kind in kinds {
                let p = try planner.plan(kind, experts: experts, ranks: r, moeLayers: logs.layers, trainable: trainable ?? [:], routing: routing)
                rows.append(PlacementEvaluation(kind: kind.rawValue, placement: p, routing: layerList, trainable: trainable))
            }
            let contiguous = rows.first { $0.kind == "contiguous" }?.rowsPerToken
            for e in rows {
                let cut = contiguous.map { String(format: "%+.1f%%", 100 * (e.rowsPerToken / $0 - 1)) } ?? "-"
                let load = e.maxLoadOverMean.isNaN ? "-" : String(format: "%.3f", e.maxLoadOverMean)
                let tr = e.maxTrainableOverMean.map { String(format: "%.2f", $0) } ?? "-"
                func pad(_ s: String, _ w: Int) -> String { String(repeating: " ", count: max(0, w - s.count)) + s }
                print(pad("\(r)", 5) + "  " + e.kind.padding(toLength: 20, withPad: " ", startingAt: 0)
                      + pad(String(format: "%.3f", e.rowsPerToken), 18) + pad(String(format: "%.1f", e.offRankRowsPerToken * Double(rowBytes) / 1024), 25)
                      + pad(cut, 20) + pad(load, 15) + pad(tr, 20))
            }
        }
    }
}

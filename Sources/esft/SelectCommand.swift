import ESFTKernels
import ESFTMethod
import ESFTModel
import Foundation

/// `esft select`: relevance scores → expert config (which experts train) + selection report.
enum SelectCommand {
    static let help = """
    Usage: esft select --scores SCORES.json --method gate|token (--threshold P | --top-k K) [--round D]
                       [--shared-experts] [--non-expert-modules] [--model DIR | --config CONFIG.json]
                       --out EXPERTS.json

    Chooses, in every MoE layer, the experts a task uses most and writes the expert config that
    training reads (the reference repository's expert_config.json format). Prints a report and
    writes it as JSON next to the config (EXPERTS.report.json).

      --scores FILE          a scores file written by esft score
      --method M             gate: rank by average gate score (ESFT-Gate, the paper uses p = 0.1);
                             token: rank by token selection ratio (ESFT-Token, the paper uses p = 0.2)
      --threshold P          per layer, take experts in descending score (ties: lower id first) while
                             their running sum is still below P; the expert that crosses P is included;
                             at least one. P in (0, 1]
      --top-k K              instead, take the K best experts of every layer (K in 1...experts)
      --round D              round scores to D decimals before ranking (the reference selected from
                             scores rounded to 4 decimals; --round 4 reproduces its expert configs)
      --shared-experts       also train the shared experts of every MoE layer
      --non-expert-modules   also train everything that is not an expert: attention, norms, router
                             gates, embeddings, lm_head, dense MLPs
      --model DIR            the model (a Hugging Face directory with config.json): checks the scores
                             were measured on it (model fingerprint, layers, experts) and counts the
                             trainable parameters and the optimizer state they need
      --config FILE          the same from a config.json alone. Without --model or --config the
                             config is still written, checked against the scores' layers and experts,
                             but the report has no parameter counts
      --out FILE             the expert config (JSON); the report goes to FILE with .json replaced by
                             .report.json. Both are written atomically; on error neither is left behind

    Optimizer state = 16 bytes per trainable parameter (fp32 weight copy, gradient, two Adam moments).
    """

    static func run(_ argv: [String]) throws {
        var args = Arguments(argv, command: "select")
        if args.wantsHelp { print(help); return }
        let scoresPath = try args.required("--scores")
        let method = try ScoreMethod(parsing: try args.required("--method"), source: "select: --method")
        let threshold = try args.double("--threshold")
        let topK = try args.option("--top-k")
        let round = try args.int("--round", min: 0)
        let shared = args.flag("--shared-experts")
        let nonExpert = args.flag("--non-expert-modules")
        let modelDir = try args.option("--model")
        let configPath = try args.option("--config")
        let out = URL(fileURLWithPath: try args.required("--out"))
        try args.finish()
        try OutputGuard.check(outputs: [.init("--out", out.path), .init("the report (next to --out)", reportPath(for: out).path)],
                              inputs: [.init("--scores", scoresPath)] + (modelDir.map { [.init("--model", $0)] } ?? [])
                                  + (configPath.map { [.init("--config", $0)] } ?? []))

        let rule: SelectionRule
        switch (threshold, topK) {
        case (let p?, nil): rule = .threshold(p)
        case (nil, let k?):
            guard let v = Int(k) else { throw ESFTError("select: --top-k must be an integer, got '\(k)'") }
            rule = .topK(v)
        case (nil, nil): throw ESFTError("select: give --threshold P or --top-k K (see esft select --help)")
        default: throw ESFTError("select: give --threshold or --top-k, not both")
        }
        let options = SelectionOptions(method: method, rule: rule, roundDecimals: round)

        let modelSource: String?
        switch (modelDir, configPath) {
        case (let d?, nil): modelSource = URL(fileURLWithPath: d).appendingPathComponent("config.json").path
        case (nil, let c?): modelSource = c
        case (nil, nil): modelSource = nil
        default: throw ESFTError("select: give --model or --config, not both")
        }
        let model = try modelSource.map { try ModelConfig.load(contentsOf: URL(fileURLWithPath: $0)) }

        let scores = try RelevanceScores.load(contentsOf: URL(fileURLWithPath: scoresPath))
        try options.validate(experts: scores.metadata.experts, source: "select")
        if let model, let modelSource {
            let fingerprinted = try scores.check(against: model, source: scoresPath, modelSource: modelSource)
            if !fingerprinted {
                FileHandle.standardError.write("esft select: note: \(scoresPath) records no model fingerprint (scored from logs?); checked layers and experts only\n".data(using: .utf8)!)
            }
        }

        let selection = try selectExperts(from: scores, options: options)
        let config = ExpertConfig(selection, sharedExperts: shared, nonExpertModules: nonExpert)
        if let model, let modelSource {
            try config.validate(against: model, source: modelSource)
        } else {
            try config.validate(moeLayers: scores.metadata.layers, experts: scores.metadata.experts, source: scoresPath)
        }
        let report = SelectionReport(options: options, layers: selection, experts: scores.metadata.experts,
                                     config: config, model: model, scoresSource: scoresPath)
        let reportURL = reportPath(for: out)
        try AtomicWrite.writeFiles([(out, config.jsonData()), (reportURL, report.jsonData())])
        print(report.text)
        print("wrote \(out.path) and \(reportURL.path)")
    }

    /// EXPERTS.json → EXPERTS.report.json (any other name gets .report.json appended).
    static func reportPath(for out: URL) -> URL {
        let name = out.lastPathComponent
        let stem = name.hasSuffix(".json") ? String(name.dropLast(5)) : name
        return out.deletingLastPathComponent().appendingPathComponent(stem + ".report.json")
    }
}

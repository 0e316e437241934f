import ESFTBase
import ESFTModel
import Foundation

/// What a selection chose and what training it will cost: printed by `esft select` and written next
/// to the expert config as JSON.
public struct SelectionReport: Equatable, Sendable {
    /// Optimizer-state bytes per trainable parameter: fp32 weight copy, gradient, and Adam's two moments.
    public static let optimizerBytesPerParameter = 16
    public static let optimizerFormula =
        "16 bytes per trainable parameter: fp32 weight copy (4) + gradient (4) + Adam first moment (4) + Adam second moment (4)"

    public struct ParameterCounts: Equatable, Sendable {
        public let trainable: Int
        public let total: Int
        public init(trainable: Int, total: Int) { self.trainable = trainable; self.total = total }
        public var optimizerStateBytes: Int { trainable * SelectionReport.optimizerBytesPerParameter }
    }

    public let options: SelectionOptions
    public let layers: [LayerSelection]
    public let expertsTotal: Int
    public let sharedExperts: Bool
    public let nonExpertModules: Bool
    /// nil when no model config was given.
    public let parameters: ParameterCounts?
    /// Where the scores came from (a path or description).
    public let scoresSource: String

    public init(options: SelectionOptions, layers: [LayerSelection], experts: Int, config: ExpertConfig,
                model: ModelConfig?, scoresSource: String) {
        self.options = options; self.layers = layers; self.scoresSource = scoresSource
        expertsTotal = experts * layers.count
        sharedExperts = config.sharedExperts; nonExpertModules = config.nonExpertModules
        parameters = model.map { m in
            let all = m.parameterSpecs().reduce(0) { $0 + $1.shape.reduce(1, *) }
            let trained = trainableParameters(config, model: m).reduce(0) { $0 + $1.shape.reduce(1, *) }
            return ParameterCounts(trainable: trained, total: all)
        }
    }

    public var expertsChosen: Int { layers.reduce(0) { $0 + $1.experts.count } }

    /// Layers whose scores all together stay below the threshold (every expert was taken).
    public var layersShortOfThreshold: [Int] {
        guard case .threshold(let p) = options.rule else { return [] }
        return layers.filter { $0.cumulativeScore < p }.map(\.layer)
    }

    var ruleDescription: String {
        switch options.rule {
        case .threshold(let p): return "threshold p = \(p)"
        case .topK(let k): return "top-\(k)"
        }
    }

    static func percent(_ part: Int, of whole: Int) -> String {
        whole == 0 ? "0.00%" : String(format: "%.2f%%", 100 * Double(part) / Double(whole))
    }

    static func grouped(_ n: Int) -> String {
        let digits = Array(String(n))
        var out = ""
        for (i, c) in digits.enumerated() {
            if i > 0 && (digits.count - i) % 3 == 0 { out += "," }
            out.append(c)
        }
        return out
    }

    static func bytes(_ n: Int) -> String {
        let gib = Double(n) / 1_073_741_824
        return gib >= 1 ? String(format: "%.2f GiB", gib) : String(format: "%.2f MiB", Double(n) / 1_048_576)
    }

    public var text: String {
        var lines: [String] = []
        let rounding = options.roundDecimals.map { ", scores rounded to \($0) decimals" } ?? ""
        lines.append("ESFT selection: method \(options.method.rawValue), \(ruleDescription)\(rounding)")
        lines.append("scores: \(scoresSource)")
        lines.append("layer  experts  cumulative score  chosen (descending score)")
        for l in layers {
            lines.append(String(format: "%5d  %7d  %16.4f  ", l.layer, l.experts.count, l.cumulativeScore)
                         + l.experts.map(String.init).joined(separator: " "))
        }
        let short = layersShortOfThreshold
        if !short.isEmpty {
            lines.append("note: in layer(s) \(short.map(String.init).joined(separator: ", ")) all scores together stay below p; every expert was taken")
        }
        lines.append("experts chosen: \(expertsChosen) of \(expertsTotal) routed experts (\(Self.percent(expertsChosen, of: expertsTotal)))")
        let also = "shared experts \(sharedExperts ? "trained" : "frozen"), non-expert modules \(nonExpertModules ? "trained" : "frozen")"
        if let p = parameters {
            lines.append("trainable parameters: \(Self.grouped(p.trainable)) of \(Self.grouped(p.total)) (\(Self.percent(p.trainable, of: p.total))); \(also)")
            lines.append("optimizer state: \(Self.grouped(p.optimizerStateBytes)) bytes (\(Self.bytes(p.optimizerStateBytes))) = \(Self.optimizerFormula)")
        } else {
            lines.append("trainable parameters: not computed (pass --model DIR or --config CONFIG.json); \(also)")
        }
        return lines.joined(separator: "\n")
    }

    public func jsonData() -> Data {
        let rule: String
        switch options.rule {
        case .threshold(let p): rule = "{\"threshold\": \(JSONText.number(p))}"
        case .topK(let k): rule = "{\"top_k\": \(k)}"
        }
        let perLayer = JSONText.object(layers.map { l in
            // Sums of D-decimal scores have D decimals; print them without binary noise (0.22599999999999998).
            let sum = options.roundDecimals.map { roundedScore(l.cumulativeScore, decimals: $0) } ?? l.cumulativeScore
            return ("\(l.layer)", "{\"experts\": \(JSONText.intList(l.experts)), \"cumulative_score\": \(JSONText.number(sum))}")
        }, indent: "  ")
        var members: [(String, String)] = [
            ("format", JSONText.string("esft-selection-report")), ("version", "1"),
            ("scores", JSONText.string(scoresSource)),
            ("method", JSONText.string(options.method.rawValue)), ("rule", rule),
            ("round", JSONText.optionalInt(options.roundDecimals)),
            ("layers", perLayer),
            ("layers_short_of_threshold", JSONText.intList(layersShortOfThreshold)),
            ("experts_chosen", "\(expertsChosen)"), ("experts_total", "\(expertsTotal)"),
            ("experts_percent", JSONText.number(100 * Double(expertsChosen) / Double(max(expertsTotal, 1)))),
            ("shared_experts", "\(sharedExperts)"), ("non_expert_modules", "\(nonExpertModules)"),
        ]
        if let p = parameters {
            members += [
                ("trainable_parameters", "\(p.trainable)"), ("total_parameters", "\(p.total)"),
                ("trainable_percent", JSONText.number(100 * Double(p.trainable) / Double(max(p.total, 1)))),
                ("optimizer_state_bytes", "\(p.optimizerStateBytes)"),
            ]
        } else {
            members += [("trainable_parameters", "null"), ("total_parameters", "null"),
                        ("trainable_percent", "null"), ("optimizer_state_bytes", "null")]
        }
        members.append(("optimizer_state_formula", JSONText.string(Self.optimizerFormula)))
        return Data((JSONText.object(members) + "\n").utf8)
    }
}

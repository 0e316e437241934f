import ESFTKernels
import ESFTModel
import ESFTMethod
import Foundation

/// Everything `esft train` can be told, from a JSON config file (snake_case keys) and/or flags.
public struct TrainOptions: Equatable, Sendable {
    public var steps = 10
    public var batchRows = 8
    public var seed: UInt64 = 5934875          // the ESFT reference's seed
    public var lr = 1e-5                        // paper: 1e-5 ESFT, 3e-5 full fine-tuning
    public var minLR = 0.0
    public var schedule = "constant"            // constant | cosine
    public var warmup = 0
    public var accumulation = 1
    public var evalEvery = 0                    // 0: no validation during training
    public var evalRows = 0                     // 0: every validation row
    public var gradClip = 1.0                   // 0: no clipping
    public var auxAlpha = 0.0                   // reference fine-tuning: 0.001
    public var threads = 0                      // 0: the cores this rank may use
    /// The GEMM backend (`GEMMLayer.configure`): auto, openblas (default), onednn; and the bf16-weight product precision.
    public var gemm = "openblas"
    public var compute = "fp32"
    public var adam = AdamW.Hyperparameters()
    public var lossNormalization = LossNormalization.tokens
    /// What the aux loss averages over: the optimizer step's rows (`batch`), or each micro-batch's rows
    /// (`micro_batch`, the reference: its aux gradient is not divided by accumulation).
    public var auxScale = AuxScale.batch
    /// Which weights end the run in trained.safetensors: the last step's, or (the reference's
    /// load_best_model_at_end) those of the evaluation with the lowest validation loss.
    public var finalWeights = FinalWeights.last

    public enum AuxScale: String, Sendable, CaseIterable { case batch, microBatch = "micro_batch" }
    public enum FinalWeights: String, Sendable, CaseIterable { case last, best }
    /// How routed experts are spread over ranks (`PlacementKind`); results agree within summation order.
    public var placement = "contiguous"
    /// Routing logs (expert_weights_<layer>.txt) the affinity placement groups experts by.
    public var placementRouting = ""
    /// Activation checkpointing (`MoETransformer.recomputeLayers`): keep each trained layer's input only and
    /// recompute its forward in backward. Same gradients; one more forward of the trained layers per step.
    public var recompute = false

    public init() {}

    /// The ESFT reference's training recipe (deepseek-ai/ESFT configs/base.yaml and train.py / train_ep.py, with
    /// HF Trainer defaults where base.yaml is silent): 500 steps of 128 rows (8 devices × 1 row × 16
    /// accumulation), constant lr 1e-5, AdamW (0.9, 0.95, wd 0.1), clip 1.0, aux 0.001, evaluation every 100
    /// steps, the best evaluation's weights at the end. configs/recipe-reference.json holds the same values.
    public static var reference: TrainOptions {
        var o = TrainOptions()
        o.steps = 500; o.batchRows = 128; o.accumulation = 16; o.seed = 5_934_875
        o.lr = 1e-5; o.schedule = "constant"; o.warmup = 0; o.gradClip = 1.0; o.auxAlpha = 0.001
        o.adam.beta1 = 0.9; o.adam.beta2 = 0.95; o.adam.eps = 1e-8; o.adam.weightDecay = 0.1
        o.evalEvery = 100; o.lossNormalization = .rows; o.auxScale = .microBatch; o.finalWeights = .best
        return o
    }

    /// Keys a config file may set (and their flags: --key-with-dashes).
    public static let keys = ["steps", "batch_rows", "seed", "lr", "min_lr", "schedule", "warmup", "accumulation",
                              "eval_every", "eval_rows", "grad_clip", "aux_alpha", "threads", "beta1", "beta2", "eps",
                              "weight_decay", "loss_normalization", "aux_scale", "final", "placement", "placement_routing", "gemm", "compute", "recompute"]

    /// Applies a config file's keys; unknown keys and wrong types are errors naming the file and the key.
    public mutating func apply(_ config: JSONReader) throws {
        for key in try config.keys() {
            guard Self.keys.contains(key) else {
                throw ESFTError("\(config.source): unknown key '\(key)' (known: \(Self.keys.joined(separator: ", ")))")
            }
            try set(key, config.field(key))
        }
    }

    /// Sets one option from a flag's text: `--lr 1e-5` reads as the config value "1e-5" would.
    public mutating func set(_ key: String, flag text: String) throws {
        try set(key, JSONReader(value: .string(text), source: "--\(key)"))
    }

    /// Sets one option from a config value; a number may also be given as a string (as flags are).
    public mutating func set(_ key: String, _ value: JSONReader) throws {
        let source = value.source
        let shown: String                                   // as the user typed it
        // A flag's text as typed; a config file's value with its JSON type (the string "64" quoted, true as true).
        if case .string(let s) = value.value, source.hasPrefix("--") { shown = "'\(s)'" } else { shown = value.describe }
        func number() throws -> Double {
            switch value.value {
            case .string(let s): if let d = Double(s), d.isFinite { return d }
            case .number(let text): if let d = Double(text), d.isFinite { return d }
            default: break
            }
            throw ESFTError("\(source): '\(key)' must be a number, got \(shown)")
        }
        func integer(min: Int) throws -> Int {
            let d = try number()
            guard d == d.rounded(), d >= Double(min), d < 1e12 else { throw ESFTError("\(source): '\(key)' must be an integer ≥ \(min), got \(shown)") }
            return Int(d)
        }
        func positive() throws -> Double {
            let d = try number()
            guard d > 0 else { throw ESFTError("\(source): '\(key)' must be positive, got \(shown)") }
            return d
        }
        func nonNegative() throws -> Double {
            let d = try number()
            guard d >= 0 else { throw ESFTError("\(source): '\(key)' must be ≥ 0, got \(shown)") }
            return d
        }
        func choice<T: RawRepresentable & CaseIterable>(_: T.Type) throws -> T where T.RawValue == String {
            // Flags spell values with dashes (--aux-scale micro-batch), config files with underscores.
            if case .string(let s) = value.value, let v = T(rawValue: s.replacingOccurrences(of: "-", with: "_")) { return v }
            throw ESFTError("\(source): '\(key)' must be \(T.allCases.map(\.rawValue).joined(separator: " or ")), got \(shown)")
        }
        switch key {
        case "steps": steps = try integer(min: 1)
        case "batch_rows": batchRows = try integer(min: 1)
        case "seed": seed = UInt64(try integer(min: 0))
        case "lr": lr = try positive()
        case "min_lr": minLR = try nonNegative()
        case "schedule":
            guard case .string(let s) = value.value, ["constant", "cosine"].contains(s) else {
                throw ESFTError("\(source): 'schedule' must be constant or cosine, got \(shown)")
            }
            schedule = s
        case "warmup": warmup = try integer(min: 0)
        case "accumulation": accumulation = try integer(min: 1)
        case "eval_every": evalEvery = try integer(min: 0)
        case "eval_rows": evalRows = try integer(min: 0)
        case "grad_clip": gradClip = try nonNegative()
        case "aux_alpha": auxAlpha = try nonNegative()
        case "threads": threads = try integer(min: 0)
        case "gemm":
            guard case .string(let s) = value.value, s == "auto" || GEMMBackend(rawValue: s) != nil else {
                throw ESFTError("\(source): 'gemm' must be auto, openblas or onednn, got \(shown)")
            }
            gemm = s
        case "compute":
            guard case .string(let s) = value.value, ComputePrecision(rawValue: s) != nil else {
                throw ESFTError("\(source): 'compute' must be fp32 or bf16, got \(shown)")
            }
            compute = s
        case "beta1", "beta2":
            let b = try nonNegative()
            guard b < 1 else { throw ESFTError("\(source): '\(key)' must be in [0, 1), got \(shown)") }
            if key == "beta1" { adam.beta1 = b } else { adam.beta2 = b }
        case "eps": adam.eps = try positive()
        case "weight_decay": adam.weightDecay = try nonNegative()
        case "loss_normalization": lossNormalization = try choice(LossNormalization.self)
        case "aux_scale": auxScale = try choice(AuxScale.self)
        case "final": finalWeights = try choice(FinalWeights.self)
        case "placement":
            guard case .string(let s) = value.value, PlacementKind(rawValue: s) != nil else {
                throw ESFTError("\(source): 'placement' must be one of \(PlacementKind.allCases.map(\.rawValue).joined(separator: ", ")), got \(shown)")
            }
            placement = s
        case "recompute": recompute = try value.bool()  // a config file's true/false; the flag is --recompute alone
        case "placement_routing":
            guard case .string(let s) = value.value else { throw ESFTError("\(source): 'placement_routing' must be a directory path, got \(shown)") }
            placementRouting = s
        default: throw ESFTError("\(source): unknown key '\(key)'")
        }
    }

    public var lrSchedule: LRSchedule {
        schedule == "cosine" ? .cosine(lr: lr, warmup: warmup, total: steps, minLR: minLR) : .constant(lr: lr, warmup: warmup)
    }

    /// The options as JSON (recorded next to the outputs).
    public var json: [String: Any] {
        ["steps": steps, "batch_rows": batchRows, "seed": seed, "lr": lr, "min_lr": minLR, "schedule": schedule,
         "warmup": warmup, "accumulation": accumulation, "eval_every": evalEvery, "eval_rows": evalRows,
         "grad_clip": gradClip, "aux_alpha": auxAlpha, "threads": threads, "beta1": adam.beta1, "beta2": adam.beta2,
         "eps": adam.eps, "weight_decay": adam.weightDecay, "loss_normalization": lossNormalization.rawValue,
         "aux_scale": auxScale.rawValue, "final": finalWeights.rawValue, "placement": placement, "placement_routing": placementRouting,
         "gemm": gemm, "compute": compute, "recompute": recompute]
    }
}

import ESFTData
import ESFTKernels
import ESFTMethod
import ESFTModel
import ESFTParallel
import ESFTStore
import Foundation

/// The end of a run, as `esft train` prints it and writes it to DIR/summary.json.
public struct TrainingSummary: Codable {
    public var steps: Int
    public var firstLoss: Double
    public var lastLoss: Double
    public var lastValidationLoss: Double?
    public var tokensPerSecond: Double
    public var trainableParameters: Int
    public var totalParameters: Int
    public var communicationBytesPerStep: Double
    public var rowsSentPerStep: Double
    public var tokenExpertPairsPerStep: Double
    public var memoryPerRank: [MemoryUsage]
    public var optimizerStateBytesPerRank: [Int]
    public var seconds: Double
    /// With `final: best`: the step whose weights trained.safetensors holds, and its validation loss.
    public var finalWeightsStep: Int?
    public var finalWeightsValidationLoss: Double?
    /// Rank 0's OpenBLAS core and threads, and `--threads` (run.json says whether every rank ran the same core).
    public var blas: BLASCore.Record
    /// The GEMM backend and compute precision this run used (`--gemm`, `--compute`).
    public var gemm: GEMMLayer.Record
    /// `--placement` (contiguous, balanced, affinity) and, per MoE layer, each routed expert's rank.
    public var placement: String
    public var expertOwners: [String: [Int]]
    /// Model FLOPs of one optimizer step (`StepFLOPs`: forward, and backward's input gradients and trainable
    /// weights' gradients), and per second of the run: what MFU is computed from (docs/performance.md).
    public var modelFLOPsPerStep: Double?
    public var modelFLOPsPerSecond: Double?
}

/// How a call to `Trainer.run` ended.
public enum TrainingOutcome {
    case finished(TrainingSummary)
    /// A stop signal: every rank stopped after `step` and the checkpoint was written.
    case preempted(step: Int, signal: String, checkpoint: URL)
}

/// How long a rank may wait inside one collective before the job is aborted as stalled (StallWatchdog).
public enum StallTimeout: Equatable, Sendable {
    /// max(600 s, 20 × the slowest step so far): generous for setup, checkpoints and evaluation, still bounded.
    case auto
    case off
    case seconds(Double)

    public static let autoFloor = 600.0, autoStepFactor = 20.0

    /// `--stall-timeout auto|off|SECONDS`.
    public init(flag: String) throws {
        switch flag {
        case "auto": self = .auto
        case "off", "0": self = .off
        default:
            guard let s = Double(flag), s.isFinite, s > 0 else {
                throw ESFTError("--stall-timeout must be auto, off or a positive number of seconds, got '\(flag)'")
            }
            self = .seconds(s)
        }
    }

    /// The timeout once the slowest step took `slowestStep` seconds (nil before the first step).
    public func seconds(slowestStep: Double?) -> Double? {
        switch self {
        case .auto: return max(Self.autoFloor, Self.autoStepFactor * (slowestStep ?? 0))
        case .off: return nil
        case .seconds(let s): return s
        }
    }
}

/// What a run does besides training: checkpoints, resuming, and stopping on request.
public struct RunControl {
    public var checkpoints = CheckpointPolicy()
    public var resume: ResumeRequest?
    public var stallTimeout = StallTimeout.auto
    /// The signal that asks this rank to stop, if one came (StopSignals); ranks agree on it every step.
    public var stopSignal: () -> Int32? = { nil }
    public init() {}
}

extension Trainer {
    /// Trains for `options.steps` steps (from a checkpoint's step when resuming); rank 0 writes
    /// DIR/metrics.jsonl as it goes, checkpoints as `control` says, then DIR/trained.safetensors,
    /// DIR/summary.json (and DIR/expert_config.json for ESFT).
    public func run(_ control: RunControl = RunControl()) throws -> TrainingOutcome {
        let restored = try control.resume.flatMap { try restore($0) }
        if best != nil, let restored, restored.step > 0 {
            // The best weights are not in checkpoints yet: resuming would silently forget an earlier best.
            throw ESFTError("--final best cannot resume a run (checkpoint \(restored.folder.path)): the best evaluation's weights are not checkpointed yet; resume with --final last, or export the --keep-best checkpoint")
        }
        var counters = restored?.counters ?? RunCounters()
        let startStep = restored?.step ?? 0
        try writeRunRecord(resumedFrom: restored)
        let metrics = comm.rank == 0 ? try MetricsFile(out.appendingPathComponent("metrics.jsonl"), keepingStepsThrough: startStep, log: log) : nil
        let schedule = options.lrSchedule
        let start = Date()
        var last = Double.nan
        let tokensPerStep = Double(options.batchRows * dataset.seqLen)
        let profile = RunProfileRecorder(layers: config.numLayers, ranks: comm.size)
        _ = comm.takeStats()
        var slowestStep: Double?
        comm.setStallTimeout(control.stallTimeout.seconds(slowestStep: nil))
        for s in startStep..<options.steps {
            model.dispatchCounters.reset()
            comm.setStallContext("step \(s + 1)")
            let stepStart = Date()
            let lr = schedule.lr(at: s)
            debugFaults.delay(rank: comm.rank)
            let r: (loss: Double, aux: Double, gradNorm: Double, targets: Int)
            do { r = try step(lr: lr) } catch let stop as NonFiniteTraining {
                // The weights still hold the state after the last good step: keep it, then stop.
                let file = out.appendingPathComponent("trained.safetensors")
                try writeTrainedTensors(file, metadata: ["stopped": "step \(s + 1): \(stop.message)"])
                throw ESFTError("step \(s + 1): \(stop.message); stopped before its update. The state after step \(s) is in \(file.path)")
            }
            // Ranks agree to stop at this boundary if any of them got a signal (SLURM signals every task,
            // mpirun forwards to every rank, but a stray kill may reach one).
            let signal = try comm.maxAllReduce(Double(control.stopSignal() ?? 0), tag: "stop")
            let seconds = try comm.maxAllReduce(Date().timeIntervalSince(stepStart), tag: "metrics")
            slowestStep = max(slowestStep ?? 0, seconds)
            comm.setStallTimeout(control.stallTimeout.seconds(slowestStep: slowestStep))
            let c = try stepCommunication(profile, stepSeconds: Date().timeIntervalSince(stepStart))
            let comms = (total: c.total, byTag: c.byTag), dispatch = c.dispatch
            if s == 0 { counters.firstLoss = r.loss }
            last = r.loss
            counters.commBytes += comms.total; counters.rowsSent += dispatch.rows; counters.pairs += dispatch.pairs
            let elapsed = counters.seconds + Date().timeIntervalSince(start)
            let eta = Date().timeIntervalSince(start) / Double(s + 1 - startStep) * Double(options.steps - s - 1)
            var line: [String: Any] = [
                "step": s + 1, "loss": r.loss, "aux_loss": r.aux, "lr": lr, "grad_norm": r.gradNorm,
                "tokens": Int(tokensPerStep), "target_tokens": r.targets, "tokens_per_s": tokensPerStep / seconds,
                "step_seconds": seconds, "elapsed_s": elapsed, "eta_s": eta,
                "comm_bytes": comms.total, "comm": comms.byTag,
                "dispatch_rows_sent": dispatch.rows, "dispatch_token_expert_pairs": dispatch.pairs, "dispatch": dispatch.byLayer,
            ]
            log(String(format: "step %d/%d  loss %.4f  lr %.2e  grad norm %.3f  %.0f tokens/s  comm %.2f MB  ETA %.0fs",
                       s + 1, options.steps, r.loss, lr, r.gradNorm, tokensPerStep / seconds, comms.total / 1e6, eta))
            var validation: Double?
            comm.setStallContext("validation after step \(s + 1)")
            if options.evalEvery > 0 && ((s + 1) % options.evalEvery == 0 || s + 1 == options.steps), let v = try validate() {
                counters.lastValidationLoss = v.loss; validation = v.loss
                best?.consider(step: s + 1, loss: v.loss, weights: arena.weights, count: arena.count)
                line["val_loss"] = v.loss; line["val_target_tokens"] = v.targets
                log(String(format: "step %d/%d  validation loss %.4f over %d tokens", s + 1, options.steps, v.loss, v.targets))
                _ = comm.takeStats()
            }
            try metrics?.append(line)
            let every = control.checkpoints.every
            let stopping = signal > 0 && s + 1 < options.steps
            if stopping || (every > 0 && (s + 1) % every == 0) {
                comm.setStallContext("the checkpoint of step \(s + 1)")
                var saved = counters
                saved.seconds = elapsed
                let folder = try writeCheckpoint(step: s + 1, counters: saved, validationLoss: validation)
                log("esft train: checkpoint \(folder.path)")
                pruneCheckpoints(control.checkpoints)
                _ = comm.takeStats()
                if stopping { return .preempted(step: s + 1, signal: StopSignals.name(Int32(signal)), checkpoint: folder) }
            }
        }
        counters.seconds += Date().timeIntervalSince(start)
        comm.setStallContext("writing the results")
        return .finished(try finish(counters: counters, lastLoss: last, resumedAt: startStep, profile: profile))
    }

    /// trained.safetensors and summary.json (collective: ranks send their experts and memory to rank 0).
    private func finish(counters: RunCounters, lastLoss last: Double, resumedAt startStep: Int,
                        profile: RunProfileRecorder) throws -> TrainingSummary {
        let tokensPerStep = Double(options.batchRows * dataset.seqLen)
        let first = counters.firstLoss, lastVal = counters.lastValidationLoss
        let commBytes = counters.commBytes, rowsSent = counters.rowsSent, pairs = counters.pairs
        if let best, let step = best.step {
            best.restore(into: arena.weights, count: arena.count)
            log(String(format: "esft train: trained.safetensors holds the weights of step %d (best validation loss %.4f)", step, best.loss))
        }
        try writeTrainedTensors(out.appendingPathComponent("trained.safetensors"))
        try profile.write(out.appendingPathComponent("profile.json"), comm: comm, model: model, firstStep: startStep + 1,
                          tokensPerStep: options.batchRows * dataset.seqLen)
        let memory = MemoryUsage.current()
        let gathered = try [memory.rssBytes, memory.anonymousBytes, memory.peakRSSBytes, optimizer.stateBytes].map {
            try comm.allGather(Int64($0), tag: "summary")
        }
        let trainedCount = try comm.allReduceSum(Int64(arena.ownedCount), tag: "summary") + Int64(arena.replicatedCount)
        let steps = Double(options.steps), seconds = counters.seconds
        let micro = options.batchRows / options.accumulation * dataset.seqLen
        let flops = Double(options.accumulation) * StepFLOPs(config: config, tokens: micro, seqLen: dataset.seqLen,
                                                             trainable: trainable.contains).total
        let summary = TrainingSummary(
            steps: options.steps, firstLoss: first, lastLoss: last, lastValidationLoss: lastVal,
            tokensPerSecond: tokensPerStep * steps / seconds, trainableParameters: Int(trainedCount),
            totalParameters: config.parameterSpecs().reduce(0) { $0 + $1.shape.reduce(1, *) },
            communicationBytesPerStep: commBytes / steps, rowsSentPerStep: rowsSent / steps, tokenExpertPairsPerStep: pairs / steps,
            memoryPerRank: (0..<comm.size).map { MemoryUsage(rssBytes: Int(gathered[0][$0]), anonymousBytes: Int(gathered[1][$0]), peakRSSBytes: Int(gathered[2][$0])) },
            optimizerStateBytesPerRank: gathered[3].map { Int($0) }, seconds: seconds,
            finalWeightsStep: best?.step, finalWeightsValidationLoss: best?.step == nil ? nil : best?.loss,
            blas: BLASCore.record(requestedThreads: options.threads), gemm: GEMMLayer.record,
            placement: model.placement.kind, expertOwners: expertOwners,
            modelFLOPsPerStep: flops, modelFLOPsPerSecond: flops * steps / seconds)
        if comm.rank == 0 {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            let data = try encoder.encode(summary)
            try writeAtomically(to: out.appendingPathComponent("summary.json")) { try $0.write(contentsOf: data) }
            if case .experts(let cfg, _) = selection {
                try writeAtomically(to: out.appendingPathComponent("expert_config.json")) { try $0.write(contentsOf: cfg.jsonData()) }
            }
        }
        return summary
    }

    /// DIR/run.json, written by rank 0 before the first step: what ran, where, and with which BLAS kernels.
    /// Ranks compare their OpenBLAS core names (a hash each): different kernels sum in different orders, so
    /// a job whose ranks differ is not bitwise reproducible, and the record says so.
    private func writeRunRecord(resumedFrom restored: RestoredRun?) throws {
        var hash = FNV1a64()
        hash.add(BLASCore.name)
        let cores = try comm.allGather(Int64(bitPattern: hash.value), tag: "run record")
        let same = Set(cores).count == 1
        if !same { log("esft train: warning: the ranks run different OpenBLAS kernels; results are not bitwise reproducible") }
        guard comm.rank == 0 else { return }
        let record: [String: Any] = [
            "command": CommandLine.arguments, "ranks": comm.size, "mpi": comm.implementationName,
            "blas": BLASCore.record(requestedThreads: options.threads).dictionary, "blas_core_same_on_every_rank": same,
            "gemm": GEMMLayer.record.dictionary,
            "options": options.json, "model_fingerprint": modelFingerprint(config: config),
            "started": ISO8601DateFormatter().string(from: Date()), "esft_version": ESFTVersion.string,
            "resumed_from": restored.map { ["checkpoint": $0.folder.path, "step": $0.step] as [String: Any] } ?? NSNull(),
        ]
        let data = try JSONSerialization.data(withJSONObject: record, options: [.prettyPrinted, .sortedKeys])
        try writeAtomically(to: out.appendingPathComponent("run.json")) { try $0.write(contentsOf: data) }
    }

    /// This step's communication, summed over ranks: bytes per tag, and dispatch rows vs (token, expert) pairs.
    /// The rank's own counters go to `profile` first (no collective there).
    private func stepCommunication(_ profile: RunProfileRecorder, stepSeconds: Double) throws -> (total: Double, byTag: [String: Double], dispatch: (rows: Double, pairs: Double, byLayer: [String: [String: Double]])) {
        let stats = comm.takeStats()
        profile.add(step: model.dispatchCounters, stats: stats, wallSeconds: stepSeconds)
        let counters = stats.counters.sorted { $0.key < $1.key }
        var bytes = counters.map { Double($0.value.bytesSent) }
        let layers = model.dispatchCounters.rowsSent.keys.sorted()
        // `!`: the dispatch counters keep rowsSent and pairs for the same layers.
        var rows = layers.map { Double(model.dispatchCounters.rowsSent[$0]!) } + layers.map { Double(model.dispatchCounters.pairs[$0]!) }
        try comm.allReduceSum(&bytes, tag: "metrics")
        try comm.allReduceSum(&rows, tag: "metrics")
        var byTag: [String: Double] = [:]
        for (k, b) in zip(counters.map(\.key), bytes) { byTag["\(k.collective)\(k.tag.map { " " + $0 } ?? "")", default: 0] += b }
        var byLayer: [String: [String: Double]] = [:]
        for (i, l) in layers.enumerated() { byLayer["\(l)"] = ["rows_sent": rows[i], "token_expert_pairs": rows[layers.count + i]] }
        let sent = rows.prefix(layers.count).reduce(0, +), pairs = rows.suffix(layers.count).reduce(0, +)
        return (bytes.reduce(0, +), byTag, (sent, pairs, byLayer))
    }

    /// Rank 0 writes every trained tensor of the job (F32, HF names, sorted) to one safetensors file, which
    /// `esft export --trained` reads. A routed expert owned by another rank comes over one exchange per
    /// tensor, streamed into the file: rank 0 holds one tensor at a time, and no count approaches 2³¹.
    /// Every rank walks the same list in the same order (the exchanges are collectives).
    func writeTrainedTensors(_ url: URL, metadata extra: [String: String] = [:], gradients: Bool = false) throws {
        let specs = trainable.specs(in: config).sorted { $0.name < $1.name }
        let local = Dictionary(uniqueKeysWithValues: arena.views.map { ($0.id, $0.offset) })
        let exchange = CommunicatorExchange(comm)
        func owner(_ id: ParameterID) -> Int { id.routedExpert.map { model.placement.layer($0.layer).owner(of: $0.expert) } ?? 0 }
        /// The values written: the weights, or (for --save-gradients) this step's gradients.
        func values(_ id: ParameterID) -> UnsafeMutablePointer<Float> {
            // `!`: called only for tensors this rank holds, each of which has a view in its arena.
            (gradients ? arena.gradients : arena.weights).pointer + local[id]!
        }
        var meta = ["producer": "esft train", "model_fingerprint": modelFingerprint(config: config), "steps": "\(optimizer.step)"]
        if case .experts(let cfg, _) = selection { meta["expert_config"] = String(decoding: cfg.jsonData(), as: UTF8.self) }
        meta.merge(extra) { $1 }
        var buffer = FloatBuffer(count: 0)
        /// Brings tensor i to rank 0 (a no-op elsewhere) and hands rank 0 its values.
        func fetch(_ spec: ParameterSpec, _ emit: (Weight) throws -> Void) throws {
            let count = spec.count, from = owner(spec.id)
            if from == 0 {
                if comm.rank == 0 { try emit(.f32(values(spec.id))) }
                return
            }
            var send = [Int](repeating: 0, count: comm.size), receive = send
            if comm.rank == from { send[0] = count }
            if comm.rank == 0 { receive[from] = count; if buffer.count < count { buffer = FloatBuffer(count: count, zeroed: false) } }
            let source = comm.rank == from ? UnsafePointer(values(spec.id)) : UnsafePointer(buffer.pointer)
            try exchange.exchangeRows(send: source, sendCounts: send, receive: buffer.pointer, receiveCounts: receive,
                                      width: 1, tag: "trained tensors")
            if comm.rank == 0 { try emit(.f32(buffer.pointer)) }
        }
        if comm.rank == 0 {
            let headers = specs.map { TensorHeader(name: $0.name, shape: $0.shape, dtype: .f32) }
            try SafetensorsWriter.write(headers, metadata: meta, to: url) { i, emit in try fetch(specs[i], emit) }
        } else {
            for spec in specs { try fetch(spec) { _ in } }
        }
    }
}

/// DIR/metrics.jsonl, one JSON object per line, flushed as each step ends. A resumed run keeps the lines
/// of the steps its checkpoint covers and drops the interrupted run's later ones, so no step appears twice.
final class MetricsFile {
    let handle: FileHandle
    let url: URL
    init(_ url: URL, keepingStepsThrough kept: Int, log: (String) -> Void) throws {
        self.url = url
        var text = ""
        if kept > 0, let old = try? String(contentsOf: url, encoding: .utf8) {
            let lines = old.split(separator: "\n", omittingEmptySubsequences: true)
            let keep = lines.filter { line in
                guard let r = try? JSONReader.parse(Data(line.utf8), source: url.path, what: "metrics line"),
                      let step = try? r.field("step").int() else { return false }
                return step <= kept
            }
            if keep.count < lines.count { log("esft train: metrics.jsonl: dropped \(lines.count - keep.count) line(s) after step \(kept) from the interrupted run") }
            text = keep.map { $0 + "\n" }.joined()
        }
        try AtomicWrite.write(Data(text.utf8), to: url)
        do { handle = try FileHandle(forWritingTo: url) } catch { throw ESFTError("\(url.path): cannot open for writing (\(ErrorText.reason(error)))") }
        try handle.seekToEnd()
    }
    deinit { try? handle.close() }
    func append(_ object: [String: Any]) throws {
        var data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
        data.append(0x0A)
        do { try handle.write(contentsOf: data) } catch { throw ESFTError("\(url.path): cannot write (\(ErrorText.reason(error)))") }
    }
}

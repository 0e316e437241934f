import ESFTBase
import ESFTData
import ESFTKernels
import ESFTMethod
import ESFTModel
import ESFTParallel
import ESFTStore
import Foundation

/// What the run loop carries from step to step besides the trainable state; a checkpoint stores it so a
/// resumed run's summary covers the whole run.
public struct RunCounters: Equatable {
    public var firstLoss = Double.nan
    public var commBytes = 0.0
    public var rowsSent = 0.0
    public var pairs = 0.0
    public var lastValidationLoss: Double?
    public var seconds = 0.0

    var json: [String: Any] {
        var j: [String: Any] = ["first_loss": firstLoss, "comm_bytes": commBytes, "rows_sent": rowsSent,
                                "token_expert_pairs": pairs, "seconds": seconds]
        j["last_val_loss"] = lastValidationLoss ?? NSNull()
        return j
    }

    init() {}

    init(_ r: JSONReader) throws {
        firstLoss = try r.field("first_loss").double()
        commBytes = try r.field("comm_bytes").double()
        rowsSent = try r.field("rows_sent").double()
        pairs = try r.field("token_expert_pairs").double()
        seconds = try r.field("seconds").double()
        let v = try r.field("last_val_loss")
        if case .null = v.value { lastValidationLoss = nil } else { lastValidationLoss = try v.double() }
    }
}

/// `--checkpoint-every N --keep K --keep-best`: when to write checkpoints and which to keep.
public struct CheckpointPolicy: Equatable {
    public var every = 0          // 0: no periodic checkpoints (a stop signal still writes one)
    public var keep = 0           // 0: keep every complete checkpoint
    public var keepBest = false   // also keep the one with the lowest val_loss
    public init() {}
}

extension Trainer {
    /// Each MoE layer's owner rank per routed expert (summary.json and checkpoint manifests).
    var expertOwners: [String: [Int]] {
        Dictionary(uniqueKeysWithValues: config.moeLayers.map { ("\($0)", model.placement.layer($0).ownerArray) })
    }

    /// The job's expert config as the manifest records it (nil for --full).
    var expertConfigJSON: String? {
        if case .experts(let cfg, _) = selection { return String(decoding: cfg.jsonData(), as: UTF8.self) }
        return nil
    }

    /// Writes OUT/checkpoints/step-NNNNNN/ (collective). Each rank streams the routed experts it owns into
    /// its own file, rank 0 the replicated tensors into replicated.h5; every file is synced and renamed
    /// into place, then rank 0 gathers the digests and writes manifest.json last. Returns the folder.
    func writeCheckpoint(step: Int, counters: RunCounters, validationLoss: Double?) throws -> URL {
        let folder = out.appendingPathComponent(CheckpointLayout.folder).appendingPathComponent(CheckpointLayout.name(step: step))
        let fm = FileManager.default
        if comm.rank == 0 {
            // A folder of that name is a crashed writer's leftover, or one a resumed run is about to rewrite.
            if fm.fileExists(atPath: folder.path) { try removeCheckpoint(folder) }
            do { try fm.createDirectory(at: folder, withIntermediateDirectories: true) } catch {
                throw ESFTError("\(folder.path): cannot create the checkpoint folder (\(ErrorText.reason(error)))")
            }
        }
        try comm.barrier(tag: "checkpoint")
        let failpoint = debugFaults.checkpointKill(rank: comm.rank, step: step)
        var written = 0
        func writeFile(_ name: String, _ views: ArraySlice<ParameterArena.View>) throws -> CheckpointFileRecord {
            let writer = try CheckpointFileWriter(folder.appendingPathComponent(name))
            writer.afterEachArray = { written += 1; if written == failpoint { kill(getpid(), SIGKILL) } }
            do {
                for v in views {
                    let o = v.offset
                    let arrays: [UnsafePointer<Float>] = [arena.weights, arena.firstMoment, arena.secondMoment].map { b in UnsafePointer<Float>(b.pointer.advanced(by: o)) }
                    try writer.add(name: v.parameter.name, shape: v.parameter.shape, arrays: arrays)
                }
                return try writer.finish()
            } catch { writer.abandon(); throw error }
        }
        // Errors are agreed on before the manifest: one rank's full disk must not leave the others waiting.
        var records: [CheckpointFileRecord] = []
        var failure: String?
        do {
            records.append(try writeFile(CheckpointLayout.rankFile(comm.rank, of: comm.size), arena.ownedViews))
            if comm.rank == 0 { records.append(try writeFile(CheckpointLayout.replicatedFile, arena.replicatedViews)) }
        } catch let e as ESFTError { failure = e.message } catch { failure = "\(error)" }
        let payload = try JSONSerialization.data(withJSONObject: failure.map { ["error": $0] } ?? ["files": records.map(\.json)])
        let gathered = try comm.gather(payload, toRoot: 0, tag: "checkpoint")
        var problems: [String] = [], files: [CheckpointFileRecord] = []
        for (r, data) in gathered.enumerated() {
            let reply = try JSONReader.parse(data, source: "rank \(r)", what: "checkpoint record")
            if let e = try reply.optionalField("error") { problems.append("rank \(r): \(try e.string())") } else {
                files += try reply.field("files").items().map(CheckpointFileRecord.init)
            }
        }
        let verdict = try comm.broadcast(problems.joined(separator: "; "), from: 0, tag: "checkpoint")
        guard verdict.isEmpty else {
            // Every rank has abandoned its files (removed its temporaries): the folder goes too.
            if comm.rank == 0 { try? removeCheckpoint(folder) }
            throw ESFTError("step \(step): the checkpoint was not written: \(verdict). The newest complete checkpoint is still there; free space and continue with --resume")
        }
        if comm.rank == 0 {
            // Rank files in rank order, then replicated.h5 (the names sort that way).
            files.sort { $0.file < $1.file }
            try writeManifest(folder: folder, step: step, counters: counters, validationLoss: validationLoss, files: files.map(\.json))
        }
        try comm.barrier(tag: "checkpoint")
        return folder
    }

    private func writeManifest(folder: URL, step: Int, counters: RunCounters, validationLoss: Double?, files: [[String: Any]]) throws {
        var manifest: [String: Any] = [
            "format": CheckpointManifest.format, "version": CheckpointManifest.version, "esft_version": ESFTVersion.string,
            "step": step, "ranks": comm.size, "threads": Threads.count, "blas_core": BLASCore.name,
            "placement": model.placement.kind, "expert_owners": expertOwners, "model_fingerprint": modelFingerprint(config: config),
            "data_digest": dataset.digest, "train_rows": dataset.trainRows.count,
            "options": options.json, "optimizer": ["kind": "adamw", "step": optimizer.step],
            "sampler": ["seed": options.seed, "epoch": sampler.cursor.epoch, "position": sampler.cursor.position],
            "schedule": ["kind": options.schedule, "next_step": step],
            "counters": counters.json, "files": files,
            "written": ISO8601DateFormatter().string(from: Date()),
        ]
        manifest["expert_config"] = expertConfigJSON ?? NSNull()
        manifest["val_loss"] = validationLoss ?? NSNull()
        let data = try JSONSerialization.data(withJSONObject: manifest, options: [.prettyPrinted, .sortedKeys])
        try AtomicWrite.write(data, to: folder.appendingPathComponent(CheckpointLayout.manifest))
        try AtomicWrite.sync(folder)
        try AtomicWrite.sync(folder.deletingLastPathComponent())
    }

    /// Rank 0, after a checkpoint completed: deletes complete checkpoints beyond the newest `keep` (but the
    /// best by val_loss with keepBest), and incomplete leftovers older than the newest complete one.
    func pruneCheckpoints(_ policy: CheckpointPolicy) {
        guard comm.rank == 0 else { return }
        let all = CheckpointLayout.folders(under: out)
        guard let newest = all.first(where: \.complete) else { return }
        var keepers = Set(all.filter(\.complete).prefix(policy.keep > 0 ? policy.keep : Int.max).map(\.url))
        if policy.keepBest {
            let scored = all.filter(\.complete).compactMap { f -> (URL, Double)? in
                guard let m = try? CheckpointManifest(folder: f.url), let v = try? m.reader.field("val_loss").double() else { return nil }
                return (f.url, v)
            }
            if let best = scored.min(by: { $0.1 < $1.1 }) { keepers.insert(best.0) }
        }
        for f in all where !keepers.contains(f.url) && (f.complete || f.step < newest.step) {
            do { try removeCheckpoint(f.url); log("esft train: removed \(f.url.lastPathComponent)\(f.complete ? "" : " (incomplete)")") } catch {
                log("esft train: warning: could not remove \(f.url.path): \(error)")
            }
        }
    }

    /// Removes a checkpoint folder manifest first, so an interrupted removal leaves an incomplete folder,
    /// never a manifest whose files are gone.
    private func removeCheckpoint(_ folder: URL) throws {
        let manifest = folder.appendingPathComponent(CheckpointLayout.manifest)
        if FileManager.default.fileExists(atPath: manifest.path) { try FileManager.default.removeItem(at: manifest) }
        try FileManager.default.removeItem(at: folder)
    }
}

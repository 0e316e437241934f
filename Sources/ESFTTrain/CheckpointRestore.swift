import ESFTBase
import ESFTData
import ESFTKernels
import ESFTMethod
import ESFTModel
import ESFTParallel
import ESFTStore
import Foundation

/// `--resume`: which checkpoint to continue from.
public enum ResumeRequest: Equatable {
    /// The newest complete checkpoint under --out; `required: false` (`--resume auto`) starts from
    /// scratch when there is none.
    case newest(required: Bool)
    case path(URL)
}

/// A checkpoint that does not belong to this job: the run stops (it is not a damaged file to skip).
struct CheckpointMismatch: Error { let message: String }

/// Where a resumed run continues.
struct RestoredRun {
    let folder: URL
    let step: Int
    let counters: RunCounters
}

extension Trainer {
    /// Options that change the arithmetic of a step: a resumed run must use the checkpoint's values.
    static let mathOptionKeys = ["batch_rows", "seed", "lr", "min_lr", "schedule", "warmup", "accumulation", "grad_clip",
                                 "aux_alpha", "beta1", "beta2", "eps", "weight_decay", "loss_normalization", "aux_scale"]

    /// Loads the trainable state, optimizer moments and cursor of a checkpoint (collective). Corrupt or
    /// unreadable checkpoints are reported and the next older one is tried; one that belongs to another job
    /// (model, data, expert config, a math option) stops the run with the option named.
    func restore(_ request: ResumeRequest) throws -> RestoredRun? {
        var candidates: [URL]
        switch request {
        case .path(let url): candidates = [url]
        case .newest(let required):
            let found = completeCheckpoints(under: out)
            for line in found.incomplete { log("esft train: \(line)") }
            candidates = found.folders
            if candidates.isEmpty {
                let where_ = out.appendingPathComponent(CheckpointLayout.folder).path
                guard !required else { throw ESFTError("--resume: no complete checkpoint in \(where_) (use --resume auto to start from scratch when there is none)") }
                log("esft train: --resume auto: no checkpoint in \(where_); starting at step 0")
                return nil
            }
        }
        for folder in candidates {
            // Rank 0 reads the manifest and checks it fits this job; every rank learns the verdict.
            var verdict = ""
            if comm.rank == 0 {
                do {
                    let m = try CheckpointManifest(folder: folder)
                    try m.checkFiles()
                    try checkCompatible(m)
                } catch let e as CheckpointMismatch { verdict = "fatal:" + e.message } catch let e as ESFTError {
                    verdict = "skip:" + e.message
                } catch { verdict = "skip:\(folder.path): \(error)" }
            }
            verdict = try comm.broadcast(verdict, from: 0, tag: "resume")
            if verdict.hasPrefix("fatal:") { throw ESFTError(String(verdict.dropFirst(6))) }
            if verdict.hasPrefix("skip:") {
                guard case .newest = request else { throw ESFTError(String(verdict.dropFirst(5))) }
                log("esft train: \(verdict.dropFirst(5)); trying the next older checkpoint")
                continue
            }
            // Every rank reads the experts it now owns (by global name, wherever they were written) and
            // checks each array's digest; rank 0 reads the replicated state once and broadcasts it.
            var failure: String?
            var manifest: CheckpointManifest?
            do {
                let m = try CheckpointManifest(folder: folder)
                try load(comm.rank == 0 ? arena.views[...] : arena.ownedViews, from: m)
                manifest = m
            } catch let e as ESFTError { failure = e.message } catch { failure = "\(error)" }
            if let failure { FileHandle.standardError.write(Data("esft train: rank \(comm.rank): \(failure)\n".utf8)) }
            let failures = try comm.allReduceSum(Int64(failure == nil ? 0 : 1), tag: "resume")
            guard failures == 0, let m = manifest else {
                guard case .newest = request else { throw ESFTError("\(folder.path): cannot be resumed (\(failure ?? "another rank failed to read it; see its message"))") }
                log("esft train: \(folder.path): \(failures) rank(s) could not read it (messages above); trying the next older checkpoint")
                continue
            }
            try broadcastReplicatedState()
            let r = m.reader
            let cursor = Sampler.Cursor(epoch: try r.field("sampler").field("epoch").int(), position: try r.field("sampler").field("position").int())
            sampler = Sampler(rows: dataset.trainRows, seed: options.seed, cursor: cursor)
            optimizer.restore(step: try r.field("optimizer").field("step").int())
            let counters = try RunCounters(r.field("counters"))
            log("esft train: resuming from \(folder.path) (step \(m.step), written by \(m.ranks) rank(s)\(m.ranks == comm.size ? "" : ", resharded onto \(comm.size)"))")
            return RestoredRun(folder: folder, step: m.step, counters: counters)
        }
        throw ESFTError("--resume: no usable checkpoint under \(out.appendingPathComponent(CheckpointLayout.folder).path) (see the messages above)")
    }

    /// Reads the views' weights and moments into the arena from whichever file of `m` holds each.
    private func load(_ views: ArraySlice<ParameterArena.View>, from m: CheckpointManifest) throws {
        let where_ = m.tensorFiles
        var readers: [String: CheckpointFileReader] = [:]
        for v in views {
            guard let record = where_[v.parameter.name] else { throw ESFTError("\(m.folder.path): holds no tensor '\(v.parameter.name)'") }
            if readers[record.file] == nil { readers[record.file] = try CheckpointFileReader(folder: m.folder, record: record) }
            let o = v.offset
            // `!`: set on the line above when missing.
            try readers[record.file]!.read(v.parameter.name, shape: v.parameter.shape,
                                           into: [arena.weights, arena.firstMoment, arena.secondMoment].map { $0.pointer + o })
        }
    }

    /// The replicated region of weights and both moments, from rank 0 to every rank, in chunks MPI can count.
    private func broadcastReplicatedState() throws {
        guard comm.size > 1 else { return }
        let chunk = 1 << 28
        for buffer in [arena.weights, arena.firstMoment, arena.secondMoment] {
            var start = arena.ownedCount
            while start < arena.count {
                let n = min(chunk, arena.count - start)
                try comm.broadcast(UnsafeMutableBufferPointer(start: buffer.pointer + start, count: n), from: 0, tag: "resume")
                start += n
            }
        }
    }

    /// Rank 0: the checkpoint was written by this job (same model, data, trainable set, math options).
    private func checkCompatible(_ m: CheckpointManifest) throws {
        let name = m.folder.path
        let fingerprint = modelFingerprint(config: config)
        guard m.modelFingerprint == fingerprint else {
            throw CheckpointMismatch(message: "\(name): written for another model (fingerprint \(m.modelFingerprint), --model has \(fingerprint))")
        }
        guard m.expertConfigJSON == expertConfigJSON else {
            let what = { (j: String?) in j == nil ? "--full" : "an expert config" }
            throw CheckpointMismatch(message: "\(name): trained with \(what(m.expertConfigJSON)) that differs from this run's \(what(expertConfigJSON)) (--experts/--full)")
        }
        let digest = try m.reader.field("data_digest").string()
        guard digest == dataset.digest else {
            throw CheckpointMismatch(message: "\(name): trained on other data (digest \(digest), --data has \(dataset.digest))")
        }
        var saved = TrainOptions()
        try saved.apply(m.reader.field("options"))
        let a = saved.json, b = options.json
        // `!`: TrainOptions.json writes every key of mathOptionKeys (issue 30 types this comparison).
        for key in Self.mathOptionKeys where "\(a[key]!)" != "\(b[key]!)" {
            throw CheckpointMismatch(message: "\(name): --\(key.replacingOccurrences(of: "_", with: "-")) was \(a[key]!) in the checkpointed run, this run has \(b[key]!); a resumed run must keep it")
        }
        if options.schedule == "cosine" && saved.steps != options.steps {
            throw CheckpointMismatch(message: "\(name): --steps was \(saved.steps) and the cosine schedule depends on it; this run has \(options.steps)")
        }
        // A checkpoint at the last step (the run died before its final outputs) resumes into writing them.
        guard m.step <= options.steps else {
            throw CheckpointMismatch(message: "\(name): is at step \(m.step), past --steps \(options.steps)")
        }
        // Experts are read by name, so a checkpoint of another placement resumes like one of another rank count.
        let placement = try m.reader.optionalField("placement")?.string() ?? "contiguous"
        let owners = try m.reader.optionalField("expert_owners").map { r in
            try Dictionary(uniqueKeysWithValues: r.keys().map { ($0, try r.field($0).items().map { try $0.int() }) })
        }
        if placement != model.placement.kind || (owners != nil && owners! != expertOwners) {
            log("esft train: note: the checkpoint was trained with --placement \(placement)\(owners != nil && placement == model.placement.kind ? " (another expert map)" : ""); this run has --placement \(model.placement.kind): experts are re-assigned by name, and the continuation agrees within summation-order bounds, not bitwise")
        }
        let threads = try m.reader.field("threads").int(), core = try m.reader.field("blas_core").string()
        if threads != Threads.count || core != BLASCore.name || m.ranks != comm.size {
            log("esft train: note: the checkpoint ran \(m.ranks) rank(s) × \(threads) thread(s) on OpenBLAS \(core); this run has \(comm.size) × \(Threads.count) on \(BLASCore.name): the continuation agrees within summation-order bounds, not bitwise")
        }
    }
}

import ESFTKernels
import ESFTMethod
import ESFTParallel
import ESFTTrain
import Foundation

enum TrainCommand {
    static let help = """
    Usage: esft train --model M --data D.h5 (--experts CFG.json | --full) --out DIR
                      [--config TRAIN.json] [--steps N] [--batch-rows B] [--seed S] [--lr LR] [--schedule constant|cosine]
                      [--warmup W] [--min-lr LR] [--accumulation A] [--eval-every K] [--eval-rows V]
                      [--grad-clip C] [--aux-alpha A] [--weight-decay WD] [--beta1 B1] [--beta2 B2] [--eps E] [--threads T]
                      [--save-gradients FILE] [--checkpoint-every N [--keep K] [--keep-best]] [--resume [auto|PATH]]
                      [--stall-timeout auto|off|SECONDS]
                      [--recipe esft|reference] [--loss-normalization tokens|rows] [--aux-scale batch|micro-batch]
                      [--final last|best] [--gemm auto|openblas|onednn] [--compute fp32|bf16]
                      [--placement contiguous|balanced|affinity [--placement-routing DIR]] [--recompute]

    Trains the experts an expert config selects (ESFT), or every parameter (--full, the FFT baseline). Runs as
    one process, or under mpirun/srun with expert parallelism: rank r of R owns a share of every MoE layer's
    routed experts (--placement; mapped from the model's HDF5 shards; other ranks' experts are never mapped), tokens
    travel to their experts' ranks with all-to-all and back, everything else is replicated. Each optimizer
    step takes B rows of the dataset's training split, shared out across ranks (uneven shares allowed); the
    loss is averaged over the global count of target tokens, so R ranks make the update one rank makes.

      --model M          esft model directory (esft import / esft init; a Hugging Face directory also works
                         on one rank, but maps every expert)
      --data D.h5        token dataset (esft data prepare); its vocabulary must be the model's
      --experts CFG      expert config from esft select: its routed experts train, plus shared experts and/or
                         every non-expert tensor when its flags say so; everything else stays frozen
      --full             train every parameter
      --out DIR          new or empty directory: metrics.jsonl (a JSON line per step, see docs/training.md),
                         trained.safetensors (every trained tensor, F32, for esft export --trained),
                         summary.json, expert_config.json
      --config FILE      JSON with any of: \(TrainOptions.keys.joined(separator: ", "))
                         (flags override it; see configs/train-*.json)
      --steps N          optimizer steps (default 10)
      --batch-rows B     rows per optimizer step, over all ranks (default 8)
      --seed S           sampling seed (default 5934875, the ESFT reference's)
      --lr LR            peak learning rate (default 1e-5; the paper: 1e-5 ESFT, 3e-5 full)
      --schedule S       constant (default) or cosine (after --warmup steps, down to --min-lr)
      --accumulation A   micro-batches per step (default 1); a rank may get no row of one (it still serves
                         its experts to the others: memory-bound jobs with fewer rows than ranks)
      --eval-every K     validation loss every K steps on the validation rows (default 0: never)
      --eval-rows V      validation rows per evaluation (default 0: all)
      --grad-clip C      clip the global gradient norm to C (default 1.0; 0: off)
      --aux-alpha A      balance loss weight (default 0): DeepSeek's sequence-level loss (the reference used 0.001);
                         for Qwen, OLMoE and Mixtral the switch loss transformers adds as router_aux_loss_coef
                         when output_router_logits is on (give that coefficient to match it)
      --weight-decay, --beta1, --beta2, --eps   AdamW (defaults 0.1, 0.9, 0.95, 1e-8)
      --threads T        kernel and GEMM threads per rank (0 or absent: the cores the rank may use)
    \(GEMMLayer.helpLines)
      --recipe R         esft (default) or reference: start from the ESFT reference's recipe (configs/base.yaml
                         and train.py: 500 steps of 128 rows in 16 micro-batches, lr 1e-5 constant, AdamW 0.9/0.95,
                         wd 0.1, clip 1.0, aux 0.001, --loss-normalization rows, --aux-scale micro-batch,
                         --eval-every 100, --final best); --config and flags override it. Same values as
                         configs/recipe-reference.json; docs/esft-method.md lists every difference
      --loss-normalization N  tokens (default): the loss is the mean over the step's target tokens; rows: the
                         mean of each row's mean (every row weighs the same, as in the reference)
      --aux-scale S      batch (default): the aux loss averages over the step's rows; micro-batch: over each
                         micro-batch's rows, not divided by accumulation (the reference)
      --final F          last (default): trained.safetensors holds the last step's weights; best: those of the
                         evaluation with the lowest validation loss (needs --eval-every; keeps one more copy of
                         the trainable weights per rank; cannot --resume yet)
      --placement P      which rank owns which routed experts (docs/training.md): contiguous (default: id
                         blocks), balanced (each layer's trainable experts spread evenly), affinity (experts
                         chosen together share a rank: fewer dispatch rows; needs --placement-routing DIR,
                         routing logs expert_weights_<layer>.txt). Results agree within summation order
      --recompute        activation checkpointing: keep only each trained layer's input [rows·T, hidden] and
                         run the layer's forward again just before its backward. The same gradients, one
                         layer's activations held at a time instead of every trained layer's, for one more
                         forward of the trained layers per step (and its expert-parallel exchanges). For rows
                         of thousands of tokens (DeepSeek-V2-Lite: 0.7 GB per layer and row of 4096);
                         `esft plan --recompute` shows the difference
      --save-gradients F write the first step's gradients (every trained tensor, before clipping, F32
                         safetensors like trained.safetensors) to F: for checking runs against each other

    Checkpoints and resuming (docs/training.md; the layout is in docs/formats.md):
      --checkpoint-every N   write DIR/checkpoints/step-NNNNNN/ every N steps: each rank's experts with their
                             AdamW moments, the replicated tensors once, and manifest.json (written last; a
                             folder without one is incomplete and never resumed from). DIR must be on a file
                             system every rank sees.
      --keep K               keep only the newest K complete checkpoints (default: all)
      --keep-best            also keep the checkpoint with the lowest validation loss (with --eval-every)
      --resume               continue the run in DIR from its newest complete checkpoint (corrupt ones are
                             reported and the next older is used); DIR may then be non-empty. Options that
                             change the arithmetic must be as they were; the rank count may differ (experts are
                             re-assigned by name). metrics.jsonl continues from the checkpoint's step.
      --resume auto          the same, but start from step 0 when DIR holds no checkpoint (job scripts)
      --resume PATH          continue from that checkpoint folder

    SIGTERM or SIGUSR1 (SLURM sends them before a kill or requeue; mpirun forwards SIGUSR1) makes every rank
    stop after the current step, write a checkpoint and exit with status 75; --resume continues from it.

    Hangs and collisions (docs/training.md, "Faults"):
      --stall-timeout T      auto (default), off, or seconds: a rank that waits longer than T inside one
                             collective (a peer stopped, a hung file system, a dead link) prints what it waited
                             in and aborts the whole job, so a SLURM job fails in bounded time instead of
                             burning its limit. auto: max(600 s, 20 × the slowest step so far)
    DIR/.esft-lock names the job writing DIR (host, pid, SLURM job); a second job on the same --out is refused
    naming it. A lock left by a dead job is taken over when it ran on this host or was this SLURM job's earlier
    run (a requeue); otherwise remove it by hand once that job is gone.
    """

    /// Exit status after a stop signal and its checkpoint (EX_TEMPFAIL: try again, with --resume).
    static let preemptedStatus: Int32 = 75

    static func run(_ argv: [String]) throws {
        var args = Arguments(argv, command: "train")
        if args.wantsHelp { print(help); return }
        let modelPath = try args.required("--model"), dataPath = try args.required("--data"), outPath = try args.required("--out")
        let expertsPath = try args.option("--experts")
        let full = args.flag("--full")
        let saveGradients = try args.option("--save-gradients")
        var control = RunControl()
        control.checkpoints.every = try args.int("--checkpoint-every", default: 0, min: 1) ?? 0
        control.checkpoints.keep = try args.int("--keep", default: 0, min: 1) ?? 0
        control.checkpoints.keepBest = args.flag("--keep-best")
        control.stallTimeout = try args.option("--stall-timeout").map(StallTimeout.init(flag:)) ?? .auto
        switch args.optionalValue("--resume") {
        case .none: break
        case .some(.none), .some(.some("latest")): control.resume = .newest(required: true)
        case .some(.some("auto")): control.resume = .newest(required: false)
        case .some(.some(let path)): control.resume = .path(URL(fileURLWithPath: path))
        }
        var options = try args.recipe() == .reference ? TrainOptions.reference : TrainOptions()
        let configPath = try args.option("--config")
        if let configPath {
            try options.apply(JSONReader.load(URL(fileURLWithPath: configPath), what: "training config"))
        }
        if args.flag("--recompute") { options.recompute = true }
        for key in TrainOptions.keys where key != "recompute" {
            if let v = try args.option("--" + key.replacingOccurrences(of: "_", with: "-")) { try options.set(key, flag: v) }
        }
        try args.finish()
        if control.checkpoints.keepBest {
            guard options.evalEvery > 0, control.checkpoints.every > 0, control.checkpoints.every % options.evalEvery == 0 else {
                throw ESFTError("train: --keep-best needs --checkpoint-every N and --eval-every K with N a multiple of K (so each checkpoint has a validation loss)")
            }
        }
        guard (expertsPath != nil) != full else { throw ESFTError("train: give exactly one of --experts CFG.json or --full") }
        let selection: TrainableSelection = try expertsPath.map { .experts(try ExpertConfig.load(contentsOf: URL(fileURLWithPath: $0)), source: $0) } ?? .full

        // --out is filled in place (by name: the run's files, its checkpoints): it may hold, say, the training config.
        let runFiles = (OutputDirectory.runFiles + ["checkpoints"]).map { OutputGuard.Item("--out (\($0))", outPath + "/" + $0) }
        try OutputGuard.check(outputs: [.init("--out", outPath, replaced: false)] + runFiles
                                  + (saveGradients.map { [.init("--save-gradients", $0)] } ?? []),
                              inputs: [.init("--model", modelPath), .init("--data", dataPath)] + (expertsPath.map { [.init("--experts", $0)] } ?? [])
                                  + (configPath.map { [.init("--config", $0)] } ?? []))
        let out = URL(fileURLWithPath: outPath)
        try OutputDirectory.check(out, resuming: control.resume != nil)

        // What the CPU can run is checked before MPI starts, so a refusal is one line and a clean exit on every rank.
        Threads.set(options.threads > 0 ? options.threads : Threads.defaultCount())
        try GEMMLayer.configure(gemm: options.gemm, compute: options.compute)
        let comm = try Communicators.fromEnvironment()
        comm.setStallTimeout(control.stallTimeout.seconds(slowestStep: nil))
        comm.setStallContext("setup (reading and checking the inputs, mapping the model)")
        runRanked(comm) {
            // Every input is validated (TrainInputs, in Trainer) on every rank before --out is created.
            let trainer = try Trainer(comm: comm, modelURL: URL(fileURLWithPath: modelPath), dataPath: dataPath, selection: selection,
                                      options: options, out: out, log: { line in if comm.rank == 0 { print(line); fflush(stdout) } })
            try comm.barrier(tag: "inputs")
            let lock = comm.rank == 0 ? try OutputDirectory.prepare(out, resuming: control.resume != nil) { print("esft train: \($0)") } : nil
            do {
                try comm.barrier(tag: "setup")  // --out exists from here on: the ranks' heartbeats go there
                comm.setStallHeartbeats(control.stallTimeout == .off ? nil : out.appendingPathComponent(".esft-heartbeats"))
                try train(trainer, comm: comm, control: &control, out: out, saveGradients: saveGradients, lock: lock)
            } catch {
                lock?.release()  // the error ends this job: the directory is free for a --resume
                throw error
            }
        }
        try comm.finalize()
    }

    /// The run after setup: prints the header, trains, reports; exits 75 after a stop signal's checkpoint.
    static func train(_ trainer: Trainer, comm: Communicator, control: inout RunControl, out: URL, saveGradients: String?,
                      lock: OutputLock?) throws {
        trainer.saveGradients = saveGradients.map { URL(fileURLWithPath: $0) }
        if comm.rank == 0 {
            print("esft train: \(comm.implementationName); \(trainer.dataset.trainRows.count) training rows of \(trainer.dataset.seqLen) tokens; "
                  + "\(trainer.owned.count + trainer.replicated.count) trainable tensors on rank 0; "
                  + "OpenBLAS \(BLASCore.name) kernels, \(Threads.count) thread(s) per rank")
        }
        let signals = StopSignals { line in if comm.rank == 0 { print(line); fflush(stdout) } }
        control.stopSignal = { signals.receivedSignal }
        switch try trainer.run(control) {
        case .finished(let s):
            lock?.release()
            if comm.rank == 0 { report(s, out: out) }
        case .preempted(let step, let signal, let folder):
            lock?.release()
            if comm.rank == 0 {
                print("esft train: preempted by \(signal) after step \(step); checkpoint \(folder.path). Resume with the same command and --resume (or --resume \(folder.path))")
                fflush(stdout)
            }
            try comm.finalize()
            exit(preemptedStatus)
        }
    }

    static func report(_ s: TrainingSummary, out: URL) {
        print(String(format: "done: %d steps, loss %.4f → %.4f%@, %.0f tokens/s, %.1f s", s.steps, s.firstLoss, s.lastLoss,
                     s.lastValidationLoss.map { String(format: ", validation %.4f", $0) } ?? "", s.tokensPerSecond, s.seconds))
        print(String(format: "trainable parameters: %ld of %ld (%.2f%%)", s.trainableParameters, s.totalParameters,
                     100 * Double(s.trainableParameters) / Double(max(s.totalParameters, 1))))
        if let f = s.modelFLOPsPerStep, let r = s.modelFLOPsPerSecond {
            print(String(format: "model FLOPs: %.3g per step, %.1f GFLOP/s for the job (MFU: divide by the ranks × `esft bench --sgemm 2048` at their threads)", f, r / 1e9))
        }
        print(String(format: "communication: %.2f MB per step; dispatch rows %.0f per step for %.0f (token, expert) pairs",
                     s.communicationBytesPerStep / 1e6, s.rowsSentPerStep, s.tokenExpertPairsPerStep))
        for (r, m) in s.memoryPerRank.enumerated() {
            print(String(format: "rank %d memory: %@; optimizer state %.1f MiB", r, m.summary, Double(s.optimizerStateBytesPerRank[r]) / 1048576))
        }
        print("wrote \(out.appendingPathComponent("trained.safetensors").path) and metrics.jsonl, summary.json")
    }
}

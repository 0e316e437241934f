import ESFTKernels
import ESFTModel
import Foundation

enum BenchCommand {
    static let help = """
    Usage: esft bench --config CONFIG.json [--batch B] [--seq T] [--steps N] [--trainable all|experts|none]
                      [--seed S] [--threads N] [--attention-block R] [--json] [--gemm G] [--compute C]
           esft bench --sgemm N [--threads T] [--steps R] [--gemm G] [--compute C]

    Measures engine throughput on a randomly initialised model (no files needed): forward only, and
    forward+backward with the chosen parameters trainable. Reports tokens/s per phase as the median over
    N timed steps after one warm-up step.

      --config FILE      a deepseek_v2 config.json (see configs/: tiny, small, medium)
      --batch B          rows per step (default 4)
      --seq T            tokens per row (default 256)
      --steps N          timed steps per phase (default 5)
      --trainable WHAT   all (full fine-tuning, default), experts (routed experts only), none
      --seed S           initialisation seed (default 1)
      --threads N        threads for kernels and GEMM products (0 or absent: the cores this process may use)
      --attention-block R  rows per causal attention block (default 256; ≥ --seq computes the full T×T)
      --json             print one JSON object instead of text
    \(GEMMLayer.helpLines)
      --sgemm N          instead: the GEMM layer's rate on N×N×N products (median of R calls after a warm-up),
                         the peak that utilisation figures are stated against: fp32 sgemm, or with
                         --compute bf16 the bf16×bf16→fp32 product of an N×N bf16 weight (Linear, y = x·Wᵀ)
    """

    /// Timings are kept to take their median: a bound keeps that list (and the run) finite.
    static let maxSteps = 100_000

    static func run(_ argv: [String]) throws {
        var args = Arguments(argv, command: "bench")
        if args.wantsHelp { print(help); return }
        if let n = try args.int("--sgemm", min: 16) {
            let threads = try args.threads()
            let repeats = try args.int("--steps", default: 5, min: 1)!
            guard repeats <= maxSteps else { throw ESFTError("bench: --steps \(repeats) is more than \(maxSteps) timed repeats") }
            try args.gemm()
            try args.finish()
            let bytes = 3 * Double(n) * Double(n) * 4, memory = ModelSizes.physicalMemory
            guard bytes <= memory / 2 else {   // three N×N fp32 matrices; half the memory leaves room for the rest
                throw ESFTError("bench: --sgemm \(n): three \(n)×\(n) fp32 matrices need \(ModelSizes.format(bytes)), more than half of this machine's \(ModelSizes.format(memory))")
            }
            Threads.set(threads)
            let rate = measureSgemmGFLOPs(n: n, repeats: repeats, compute: GEMMLayer.compute)
            let what = GEMMLayer.backend == .onednn ? "oneDNN \(OneDNN.isa)" : "OpenBLAS \(BLASCore.name) kernels, chosen by \(BLASCore.origin)"
            print(String(format: "%@ %d×%d×%d: %.1f GFLOP/s on %d thread(s) (%.1f per thread), median of %d; %@",
                         GEMMLayer.compute == .bf16 ? "bf16 matmul" : "sgemm", n, n, n, rate, threads, rate / Double(threads), repeats, what))
            return
        }
        let configPath = try args.required("--config")
        let b = try args.int("--batch", default: 4, min: 1)!, t = try args.int("--seq", default: 256, min: 2)!
        let steps = try args.int("--steps", default: 5, min: 1)!
        guard steps <= maxSteps else { throw ESFTError("bench: --steps \(steps) is more than \(maxSteps) timed steps") }
        let trainable = try args.option("--trainable") ?? "all"
        let seed = UInt64(try args.int("--seed", default: 1)!)
        let threads = try args.threads()
        let json = args.flag("--json")
        if let block = try args.int("--attention-block", min: 1) { MoETransformer.attentionBlockRows = block }
        try args.gemm()
        try args.finish()
        guard ["all", "experts", "none"].contains(trainable) else {
            throw ESFTError("--trainable must be all, experts or none, got '\(trainable)'")
        }
        Threads.set(threads)
        let config = try ModelConfig.load(contentsOf: URL(fileURLWithPath: configPath))
        // Every parameter in memory (fp32), a gradient for each trainable one, and the logits with their gradient.
        let sizes = ModelSizes(config)
        let gradients = trainable == "all" ? sizes.parameters : trainable == "experts" ? sizes.routedExpertParameters : 0
        try sizes.requireMemory((sizes.parameters + gradients) * 4, for: "bench (the random model in memory, fp32, with gradients)", source: configPath)
        try sizes.requireBatchMemory(rows: b, seqLen: t, training: trainable != "none", what: "--batch \(b) --seq \(t)", source: configPath)
        let params = ParameterSet.randomlyInitialized(config, seed: seed)
        let model = try MoETransformer(config: config, parameters: params)
        for p in params.ordered where trainable == "all" || (trainable == "experts" && p.id.routedExpert != nil) {
            p.makeTrainable()
        }
        var rng = SplitMix64(seed: seed &+ 1)
        let ids = (0..<(b * t)).map { _ in Int32(rng.next() % UInt64(config.vocabSize)) }
        let batch = TokenBatch(batch: b, seqLen: t, inputIds: ids, labels: ids)

        func median(_ xs: [Double]) -> Double { xs.sorted()[xs.count / 2] }
        func time(_ body: () throws -> Void) rethrows -> Double {
            let start = DispatchTime.now().uptimeNanoseconds
            try body()
            return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        }
        var forward: [Double] = [], train: [Double] = []
        _ = try model.forward(batch, training: false)  // warm-up: buffers allocated, pages touched
        for _ in 0..<steps { forward.append(try time { _ = try model.forward(batch, training: false) }) }
        if trainable != "none" {
            _ = try model.forward(batch, training: true); try model.backward()
            for _ in 0..<steps {
                train.append(try time { _ = try model.forward(batch, training: true); try model.backward() })
            }
        }
        let tokens = Double(b * t)
        let flops = StepFLOPs(config: config, tokens: b * t, seqLen: t, trainable: { (id: ParameterID) in params[id]?.isTrainable ?? false })
        let total = params.ordered.reduce(0) { $0 + $1.count }
        let trainableCount = params.trainable.reduce(0) { $0 + $1.count }
        let result: [String: Any] = [
            "config": configPath, "parameters": total, "trainable_parameters": trainableCount, "batch": b, "seq": t,
            "threads": threads, "steps": steps,
            "forward_tokens_per_s": tokens / median(forward),
            "forward_backward_tokens_per_s": train.isEmpty ? NSNull() : tokens / median(train) as Any,
            "forward_flops": flops.forward, "forward_backward_flops": flops.total,
            "forward_flops_per_s": flops.forward / median(forward),
            "forward_backward_flops_per_s": train.isEmpty ? NSNull() : flops.total / median(train) as Any,
            "activation_bytes": model.activationBytes, "blas": BLASCore.record(requestedThreads: threads).dictionary,
            "gemm": GEMMLayer.record.dictionary,
        ]
        if json {
            let data = try JSONSerialization.data(withJSONObject: result, options: [.sortedKeys])
            print(String(decoding: data, as: UTF8.self))
        } else {
            print("\(configPath): \(total) parameters (\(trainableCount) trainable), batch \(b)×\(t), \(threads) thread(s)")
            print("  BLAS: OpenBLAS \(BLASCore.name) kernels, chosen by \(BLASCore.origin); OpenBLAS on \(BLASCore.threads) thread(s), products split over \(Threads.count) by the GEMM layer")
            print("  GEMM: \(GEMMLayer.backend.rawValue), compute \(GEMMLayer.compute.rawValue) (\(GEMMLayer.reason))")
            print(String(format: "  forward           %10.1f tokens/s  (median of %d, %.3f s/step)  %7.1f model GFLOP/s",
                         tokens / median(forward), steps, median(forward), flops.forward / median(forward) / 1e9))
            if !train.isEmpty {
                print(String(format: "  forward+backward  %10.1f tokens/s  (median of %d, %.3f s/step)  %7.1f model GFLOP/s",
                             tokens / median(train), steps, median(train), flops.total / median(train) / 1e9))
            }
            print("  model FLOPs counted from shapes (StepFLOPs); MFU = model GFLOP/s ÷ `esft bench --sgemm 2048` at these threads")
            print(String(format: "  activations+scratch held: %.1f MiB", Double(model.activationBytes) / 1048576))
        }
    }
}

import ESFTKernels
import ESFTModel
import ESFTStore
import Foundation

enum ForwardCommand {
    static let help = """
    Usage: esft forward --model DIR --tokens FILE --out FILE.safetensors [--grads] [--trainable SPEC]
                        [--aux-alpha A] [--compare REF.safetensors] [--threads N] [--gemm G] [--compute C]

    Runs the model (any supported family) on a batch of tokens and writes what Hugging Face transformers would
    compute, so that anyone can check this engine against their own reference.

      --model DIR        an esft model directory (esft import / esft init), or a Hugging Face one:
                         config.json (model_type deepseek_v2) and model.safetensors, or shards listed
                         in model.safetensors.index.json (F32, BF16 or F16; routed experts per expert
                         or fused 3-D)
      --tokens FILE      JSON {"input_ids": [[...], ...], "labels": [[...], ...]}: B rows of equal
                         length T. Labels follow HF: same shape as input_ids, the logits at t are
                         scored against labels[t+1], -100 is ignored; omitted means labels = input_ids
      --out FILE         safetensors output: logits [B,T,V] f32, loss [1] f32 (mean cross-entropy),
                         aux_loss [1] when --aux-alpha > 0, and with --grads one tensor per trainable
                         parameter, grad.<name>, with <name> the per-expert HF name (for example
                         grad.model.layers.2.mlp.experts.5.up_proj.weight)
      --grads            also compute gradients of loss (+ aux_loss) for the trainable parameters
      --trainable SPEC   which parameters get gradients (implies --grads): 'all' (default), or a
                         comma-separated list of names where '*' matches any characters, e.g.
                         'model.layers.1.mlp.experts.*,lm_head.weight'
      --aux-alpha A      weight of DeepSeek's sequence-level balance loss (default 0, as HF computes)
      --compare REF      compare the output with a reference safetensors file holding logits, loss and
                         (with --grads) grad.<name>: prints each tensor's max error relative to its
                         largest magnitude and exits 3 unless logits and loss are within 1e-4 and
                         every gradient within 1e-3
      --threads N        threads for kernels and GEMM products (0 or absent: the cores this process may use)
    \(GEMMLayer.helpLines)
    """

    static func run(_ argv: [String]) throws {
        var args = Arguments(argv, command: "forward")
        if args.wantsHelp { print(help); return }
        let modelDir = URL(fileURLWithPath: try args.required("--model"))
        let tokensPath = try args.required("--tokens")
        let outPath = URL(fileURLWithPath: try args.required("--out"))
        let trainableSpec = try args.option("--trainable")
        let grads = args.flag("--grads") || trainableSpec != nil
        let alpha = try args.double("--aux-alpha") ?? 0
        let comparePath = try args.option("--compare")
        Threads.set(try args.threads())
        try args.gemm()
        try args.finish()
        try OutputGuard.check(outputs: [.init("--out", outPath.path)],
                              inputs: [("--model", modelDir.path), ("--tokens", tokensPath), ("--compare", comparePath)]
                                  .compactMap { n, p in p.map { .init(n, $0) } })
        guard alpha >= 0 else { throw ESFTError("--aux-alpha must be ≥ 0") }

        let loaded = try LoadedModel.open(modelDir)
        let params = loaded.parameters, unused = loaded.unused
        if !unused.isEmpty {
            let shown = unused.prefix(3).joined(separator: ", ")
            FileHandle.standardError.write("esft forward: note: \(unused.count) tensor(s) in \(modelDir.path) are not used by the model: \(shown)\(unused.count > 3 ? ", ..." : "")\n".data(using: .utf8)!)
        }
        let batch = try TokenFile.read(path: tokensPath)
        let model = try MoETransformer(config: loaded.config, parameters: params)
        model.auxLossAlpha = Float(alpha)
        model.headChunkRows = batch.batch * batch.seqLen  // every row's logits are written out
        if grads {
            let chosen = try TrainableSpec.parse(trainableSpec ?? "all").select(from: params)
            for p in chosen { p.makeTrainable() }
        }

        let start = Date()
        let result: ForwardResult
        do { result = try model.forward(batch, training: grads) } catch let e as ESFTError {
            throw ESFTError("\(tokensPath): \(e.message)")
        }
        if grads { try model.backward() }
        let seconds = Date().timeIntervalSince(start)

        let v = loaded.config.vocabSize
        let logits = model.logits(count: batch.batch * batch.seqLen * v)
        var loss = Float(result.loss), aux = Float(result.auxLoss)
        var tensors = [TensorToWrite(name: "logits", shape: [batch.batch, batch.seqLen, v], data: logits.baseAddress!)]
        try withUnsafePointer(to: &loss) { lossPtr in
            try withUnsafePointer(to: &aux) { auxPtr in
                tensors.append(TensorToWrite(name: "loss", shape: [1], data: lossPtr))
                if alpha > 0 { tensors.append(TensorToWrite(name: "aux_loss", shape: [1], data: auxPtr)) }
                for p in params.trainable {
                    tensors.append(TensorToWrite(name: "grad." + p.name, shape: p.shape, data: p.gradPointer!))
                }
                try SafetensorsWriter.write(tensors, metadata: ["producer": "esft forward"], to: outPath)
            }
        }
        let tokens = batch.batch * batch.seqLen
        print(String(format: "loss %.6f over %d targets%@; %d tokens in %.3f s (%.0f tokens/s, %@); wrote %@%@",
                     result.loss, result.targetCount, alpha > 0 ? String(format: ", aux_loss %.6f", result.auxLoss) : "",
                     tokens, seconds, Double(tokens) / max(seconds, 1e-9), grads ? "forward+backward" : "forward",
                     outPath.path, grads ? " with \(params.trainable.count) gradients" : ""))
        print("memory: \(MemoryUsage.current().summary)")
        if let comparePath, try !Comparison.run(ours: outPath.path, reference: comparePath, expectGradients: grads) {
            exit(3)
        }
    }
}

/// The `--tokens` file: {"input_ids": [[Int]], "labels": [[Int]]?}.
enum TokenFile {
    /// Every id and label an integer (true is not 1, 2.5 is not 2); their range is checked by the model's forward.
    static func read(path: String) throws -> TokenBatch {
        let f = try JSONReader.load(URL(fileURLWithPath: path), what: "token file")
        for key in try f.keys() where key != "input_ids" && key != "labels" {
            throw ESFTError("\(path): unknown field '\(key)' (expected input_ids and optionally labels)")
        }
        let ids = try rows(f.field("input_ids"))
        let labels = try f.optionalField("labels").map(rows) ?? ids
        guard let t = ids.first?.count, t > 0 else { throw ESFTError("\(path): field 'input_ids' must hold at least one non-empty row") }
        guard ids.allSatisfy({ $0.count == t }) else { throw ESFTError("\(path): field 'input_ids': every row must have the same length \(t)") }
        guard labels.count == ids.count, labels.allSatisfy({ $0.count == t }) else {
            throw ESFTError("\(path): field 'labels' must have the same shape as input_ids [\(ids.count), \(t)]")
        }
        return TokenBatch(batch: ids.count, seqLen: t, inputIds: ids.flatMap { $0 }, labels: labels.flatMap { $0 })
    }

    private static func rows(_ field: JSONReader) throws -> [[Int32]] {
        try field.items().map { row in
            try row.items().map { value in
                let id = try value.int()
                guard let i = Int32(exactly: id) else { throw value.fail("is \(id), not an int32 token id") }
                return i
            }
        }
    }
}

/// `--trainable`: 'all' or comma-separated name patterns with '*' wildcards.
struct TrainableSpec {
    let patterns: [String]

    static func parse(_ s: String) throws -> TrainableSpec {
        let parts = s.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        guard !parts.isEmpty else { throw ESFTError("--trainable: empty specification") }
        return TrainableSpec(patterns: parts)
    }

    func select(from params: ParameterSet) throws -> [Parameter] {
        if patterns == ["all"] { return params.ordered }
        var chosen: [Parameter] = []
        for pattern in patterns {
            let matches = params.ordered.filter { Self.matches(pattern, $0.name) }
            guard !matches.isEmpty else { throw ESFTError("--trainable: '\(pattern)' matches no parameter of the model") }
            chosen += matches
        }
        var seen = Set<String>()
        return chosen.filter { seen.insert($0.name).inserted }
    }

    /// Glob match where '*' matches any run of characters (including dots).
    static func matches(_ pattern: String, _ name: String) -> Bool {
        let p = Array(pattern.utf8), n = Array(name.utf8)
        var pi = 0, ni = 0, star = -1, mark = 0
        while ni < n.count {
            if pi < p.count && p[pi] == n[ni] { pi += 1; ni += 1 }
            else if pi < p.count && p[pi] == UInt8(ascii: "*") { star = pi; mark = ni; pi += 1 }
            else if star >= 0 { pi = star + 1; mark += 1; ni = mark }
            else { return false }
        }
        while pi < p.count && p[pi] == UInt8(ascii: "*") { pi += 1 }
        return pi == p.count
    }
}

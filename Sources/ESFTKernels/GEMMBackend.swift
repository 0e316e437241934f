import CDNNLShims

/// Which library runs the GEMM layer's products. OpenBLAS is today's path and the default; oneDNN runs
/// fp32 products through `dnnl_sgemm` and, with bf16 compute, the products whose weight is stored bf16
/// through a bf16×bf16→fp32 matmul primitive. See docs/architecture.md ("The GEMM layer").
public enum GEMMBackend: String, CaseIterable, Sendable { case openblas, onednn }

/// The precision of the products whose weight is stored bf16 (frozen experts, attention, head). fp32 widens
/// the weight exactly and multiplies in fp32 (bit-for-bit today's path with OpenBLAS); bf16 rounds the
/// activation operand to bf16 for that product only and accumulates in fp32 (oneDNN only). Products with
/// fp32 weights (trainable tensors, attention scores) always stay fp32.
public enum ComputePrecision: String, CaseIterable, Sendable { case fp32, bf16 }

/// The process-wide GEMM set-up, chosen once at start-up (like `Threads`) from `--gemm` and `--compute`.
public enum GEMMLayer {
    public nonisolated(unsafe) private(set) static var backend: GEMMBackend = .openblas
    public nonisolated(unsafe) private(set) static var compute: ComputePrecision = .fp32
    /// What was asked for (`auto`, `openblas`, `onednn`) and why `backend` was picked.
    public nonisolated(unsafe) private(set) static var requested = "openblas"
    public nonisolated(unsafe) private(set) static var reason = "default"

    /// True when the oneDNN products run with bf16 activations for bf16 weights.
    @inline(__always) static var bf16Products: Bool { backend == .onednn && compute == .bf16 }

    /// The `auto` rule, from measurements (docs/performance.md): bf16 compute needs oneDNN (the only bf16
    /// path; native with AVX512-BF16 or AMX, emulated by oneDNN on plain AVX-512). fp32 compute takes oneDNN
    /// only with AMX (Sapphire Rapids and later, where issue 12 measured dnnl_sgemm at 1.7× OpenBLAS); on
    /// AVX512-BF16 without AMX (Zen 4) the engine ran fp32 slower on oneDNN than on OpenBLAS's Cooperlake
    /// kernels, and elsewhere OpenBLAS stays. `isa` is oneDNN's effective ISA (`OneDNN.isa`), nil when unusable.
    public static func autoChoice(isa: String?, compute: ComputePrecision) -> (GEMMBackend, String) {
        guard let isa else { return (.openblas, "auto: oneDNN is not usable here") }
        if compute == .bf16 { return (.onednn, "auto: --compute bf16 runs on oneDNN (ISA \(isa))") }
        if isa.contains("amx") { return (.onednn, "auto: oneDNN ISA \(isa) has AMX") }
        return (.openblas, "auto: fp32 compute and oneDNN ISA \(isa) has no AMX")
    }

    /// Validates and applies `--gemm` and `--compute`; throws naming the option on bad values or combinations.
    public static func configure(gemm: String, compute computeName: String) throws {
        guard let precision = ComputePrecision(rawValue: computeName) else {
            throw ESFTError("--compute must be fp32 or bf16, got '\(computeName)'")
        }
        let chosen: GEMMBackend, why: String
        switch gemm {
        case "auto": (chosen, why) = autoChoice(isa: OneDNN.isAvailable ? OneDNN.isa : nil, compute: precision)
        case "openblas": (chosen, why) = (.openblas, "--gemm openblas")
        case "onednn":
            guard OneDNN.isAvailable else { throw ESFTError("--gemm onednn: oneDNN's CPU engine could not be created on this machine") }
            (chosen, why) = (.onednn, "--gemm onednn")
        default: throw ESFTError("--gemm must be auto, openblas or onednn, got '\(gemm)'")
        }
        if precision == .bf16 && chosen != .onednn {
            throw ESFTError("--compute bf16 needs the oneDNN backend, but --gemm \(gemm) runs OpenBLAS (\(why))")
        }
        if precision == .bf16, let problem = OneDNN.bf16Problem {
            throw ESFTError("--compute bf16 cannot run here: \(problem); use --compute fp32 (the default: bf16-stored weights widened exactly, on any CPU)")
        }
        set(chosen, compute: precision, requested: gemm, reason: why)
    }

    /// Sets the backend directly (tests); `configure` is the command-line path.
    public static func set(_ b: GEMMBackend, compute c: ComputePrecision = .fp32, requested r: String? = nil, reason why: String = "set") {
        // Tests and `configure` only: configure refuses both cases with a message first, tests skip on `bf16Problem`.
        precondition(c == .fp32 || b == .onednn, "bf16 compute needs the oneDNN backend")
        precondition(c == .fp32 || OneDNN.bf16Problem == nil, "bf16 compute cannot run here: \(OneDNN.bf16Problem ?? "")")
        backend = b; compute = c; requested = r ?? b.rawValue; reason = why
        if b == .onednn { esft_dnnl_set_threads(Int32(Threads.count)) }
    }

    /// The GEMM set-up of a run, recorded next to the BLAS record in run.json, summary.json and bench output.
    public struct Record: Codable, Equatable, Sendable {
        public var backend: String
        public var compute: String
        public var requested: String
        public var reason: String
        /// oneDNN's effective ISA (only with the oneDNN backend).
        public var onednnIsa: String?
        public var dictionary: [String: Any] {
            var d: [String: Any] = ["backend": backend, "compute": compute, "requested": requested, "reason": reason]
            if let onednnIsa { d["onednn_isa"] = onednnIsa }
            return d
        }
        enum CodingKeys: String, CodingKey { case backend, compute, requested, reason, onednnIsa = "onednn_isa" }
    }

    public static var record: Record {
        Record(backend: backend.rawValue, compute: compute.rawValue, requested: requested, reason: reason,
               onednnIsa: backend == .onednn ? OneDNN.isa : nil)
    }

    /// `--gemm` and `--compute` in every command's help.
    public static let helpLines = """
          --gemm auto|openblas|onednn  the GEMM backend (default openblas; auto: oneDNN with --compute bf16 or on
                             CPUs with AMX, else OpenBLAS; see docs/architecture.md)
          --compute fp32|bf16  products with bf16-stored weights in fp32 (default, exact widening) or bf16
                             (activations rounded to bf16, fp32 accumulation; needs oneDNN)
        """
}

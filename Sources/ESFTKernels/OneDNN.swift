import CDNNL
import CDNNLShims
import Foundation

/// oneDNN (libdnnl, Debian 12: 2.6.3) behind the GEMM layer: `dnnl_sgemm` for fp32 products and cached
/// bf16×bf16→fp32 matmul primitives for products with bf16 weights. Weights stay in their plain row-major
/// layout where they live (mapped files): no reordered or prepacked copy is made, so the cache holds only
/// primitives (one per shape and stride pattern, with M a run-time dimension), never weight data.
/// oneDNN 2.6 has no f32×bf16 matmul (dnnl_matmul with f32 source and bf16 weights is "unimplemented"),
/// so fp32 compute with a bf16 weight widens the weight as the OpenBLAS path does and calls `dnnl_sgemm`.
public enum OneDNN {
    /// The CPU engine could be created (checked once).
    public static let isAvailable: Bool = esft_dnnl_available() != 0
    /// oneDNN's effective instruction set here, e.g. "avx512_core_bf16" or "avx512_core_amx".
    public static var isa: String { String(cString: esft_dnnl_isa()) }

    /// Why oneDNN cannot run bf16 products here, or nil when it can. Probed once, by creating (and
    /// destroying) the four kinds of bf16 primitive `matmulBF16` makes: a weight used transposed and as is,
    /// with and without accumulation. oneDNN 2.6 refuses bf16 below AVX-512 (Zen 3, Haswell…); where it
    /// accepts one shape its reference matmul covers every shape, so a passed probe means `matmulBF16`
    /// never meets an unimplemented primitive. `GEMMLayer.configure` refuses `--compute bf16` on this.
    public static let bf16Problem: String? = {
        guard isAvailable else { return "oneDNN's CPU engine could not be created on this machine" }
        for (bRow, bCol) in [(1, 16), (16, 1)] {
            for accumulate in [false, true] {
                var status: Int32 = 0
                var name = [CChar](repeating: 0, count: 96)
                guard let mm = esft_matmul_create(16, 16, 16, 1, Int64(bRow), Int64(bCol), 16, 1, 1, accumulate ? 1 : 0,
                                                  1, 0, &status, &name, name.count) else { return bf16Refusal(status: status) }
                esft_matmul_destroy(mm)
            }
        }
        return nil
    }()

    /// The refusal in words a user can act on: the CPU flags oneDNN's bf16 products need and this CPU lacks,
    /// or the variable that capped oneDNN below them.
    public static func bf16Refusal(status: Int32, environment env: [String: String] = ProcessInfo.processInfo.environment) -> String {
        let needs = CPUFeatures.oneDNNBF16Flags.joined(separator: ", ")
        if let flags = CPUFeatures.flags(environment: env) {
            let lacking = CPUFeatures.missing(CPUFeatures.oneDNNBF16Flags, from: flags)
            if !lacking.isEmpty {
                return "oneDNN 2.6 runs bf16 products only on AVX-512 CPUs (\(needs)), and this CPU lacks \(lacking.joined(separator: ", ")) (oneDNN runs \(isa) here)"
            }
        }
        for variable in ["ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"] {
            if let cap = env[variable] {
                return "\(variable)=\(cap) limits oneDNN to \(isa), below the AVX-512 (\(needs)) its bf16 products need"
            }
        }
        return "oneDNN could not create a bf16 matmul here (status \(status), ISA \(isa))"
    }

    /// Row-major fp32 GEMM (same contract as `sgemm`; k > 0, m, n > 0).
    static func sgemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float,
                      a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                      beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int) {
        let st = dnnl_sgemm(transA ? 84 : 78, transB ? 84 : 78, Int64(m), Int64(n), Int64(k), alpha,
                            a, Int64(lda), b, Int64(ldb), beta, c, Int64(ldc))  // 84 'T', 78 'N'
        // dnnl_sgemm runs on every x86-64 ISA and fails only on invalid arguments, which the GEMM layer never passes.
        precondition(st == dnnl_success, "dnnl_sgemm failed (status \(st.rawValue)) for \(m)×\(n)×\(k)")
    }

    /// A primitive's identity: everything it was created with except M and the data pointers.
    struct Key: Hashable { var n, k, lda, bRow, bCol, ldc: Int; var accumulate: Bool }
    nonisolated(unsafe) static var primitives: [Key: OpaquePointer] = [:]
    /// oneDNN's implementation name per created primitive, for reports (e.g. "gemm:jit").
    public nonisolated(unsafe) private(set) static var implementations: Set<String> = []
    public static var cachedPrimitives: Int { primitives.count }

    /// C[m, n] (+)= A[m, k] · B[k, n], A and B bf16, C fp32 with fp32 accumulation. A's rows are `lda` apart
    /// (columns contiguous); B's element (i, j) is at i·bRow + j·bCol, so a [n, k] weight used transposed is
    /// (bRow 1, bCol k) and a [k, n] weight used as is (bRow n, bCol 1).
    static func matmulBF16(m: Int, n: Int, k: Int, a: UnsafePointer<UInt16>, lda: Int,
                           b: UnsafePointer<UInt16>, bRow: Int, bCol: Int,
                           c: UnsafeMutablePointer<Float>, ldc: Int, accumulate: Bool) {
        let key = Key(n: n, k: k, lda: lda, bRow: bRow, bCol: bCol, ldc: ldc, accumulate: accumulate)
        let mm: OpaquePointer
        if let cached = primitives[key] { mm = cached } else {
            var status: Int32 = 0
            var name = [CChar](repeating: 0, count: 96)
            guard let created = esft_matmul_create(Int64(n), Int64(k), Int64(lda), 1, Int64(bRow), Int64(bCol), Int64(ldc),
                                                   1, 1, accumulate ? 1 : 0, 1, 0, &status, &name, name.count) else {
                // Unreachable from input or hardware: bf16 products run only after `bf16Problem` found every kind
                // of bf16 primitive creatable (`GEMMLayer.configure` and `set` check it), and then oneDNN has one
                // for every shape.
                fatalError("oneDNN: no bf16 matmul for n \(n) k \(k) (status \(status))")
            }
            mm = created
            primitives[key] = mm
            implementations.insert(String(cString: name))
        }
        let st = esft_matmul_run(mm, Int64(m), a, b, c)
        // A created primitive fails to run only when its three memory handles cannot be allocated (a few hundred bytes).
        precondition(st == 0, "oneDNN bf16 matmul failed (status \(st)) for \(m)×\(n)×\(k)")
    }
}

/// fp32 → bf16 with round-to-nearest-even (NaN stays NaN), rows of `cols` floats `stride` apart into a
/// contiguous [rows, cols] destination.
public func roundToBF16(_ src: UnsafePointer<Float>, rows: Int, cols: Int, stride: Int, into dst: UnsafeMutablePointer<UInt16>) {
    parallelChunks(rows, grain: max(1, (1 << 14) / max(cols, 1))) { range in
        for r in range {
            let s = src + r * stride, d = dst + r * cols
            for j in 0..<cols {
                let bits = s[j].bitPattern
                d[j] = s[j].isNaN ? UInt16(bits >> 16) | 0x40 : UInt16((bits &+ 0x7FFF &+ ((bits >> 16) & 1)) >> 16)
            }
        }
    }
}

/// The bf16 copy of the activation operand of one product (one product runs at a time, as with
/// `WidenScratch`); grow-only, so steady-state steps allocate nothing.
enum BF16Scratch {
    nonisolated(unsafe) static let activations = Reusable<UInt16>()
}

import COpenBLAS
import Foundation

/// Which OpenBLAS kernels run, and making sure they are the best this CPU supports.
///
/// A DYNAMIC_ARCH OpenBLAS picks its kernels once, when the library loads, from CPUID. Debian 12's
/// 0.3.21 does not know Sapphire/Emerald Rapids and falls back to `Prescott` (SSE3): every GEMM then runs
/// ~8× slower than the machine allows. `OPENBLAS_CORETYPE` overrides the choice, but it is read only at
/// load time, so the one fix that needs nothing from the user is to re-execute ourselves once, with it
/// set, before anything else happens (before MPI is initialised: `execv` keeps the PID, the environment and
/// the file descriptors the launcher gave, so mpirun and srun see the same process). See docs/performance.md.
public enum BLASCore {
    /// The kernel set OpenBLAS runs (`openblas_get_corename`), e.g. "SkylakeX".
    public static var name: String { String(cString: openblas_get_corename()) }
    /// OpenBLAS's build description (`openblas_get_config`).
    public static var buildConfig: String { String(cString: openblas_get_config()) }
    /// Threads OpenBLAS will use for one call.
    public static var threads: Int { Int(openblas_get_num_threads()) }

    /// Set in the re-executed process to the core OpenBLAS had chosen by itself; records that we chose.
    public static let autoFromVariable = "ESFT_BLAS_AUTOCORE_FROM"
    /// `ESFT_BLAS_AUTOCORE=0` keeps OpenBLAS's own choice.
    public static let switchVariable = "ESFT_BLAS_AUTOCORE"
    /// For tests on CPUs that OpenBLAS detects correctly: act as if OpenBLAS had chosen this core.
    public static let pretendVariable = "ESFT_BLAS_PRETEND_CORE"

    /// How the running core came to be: OpenBLAS's own detection, the user's OPENBLAS_CORETYPE, or ours.
    public static var origin: String {
        let env = ProcessInfo.processInfo.environment
        if let from = env[autoFromVariable] { return "esft (OpenBLAS chose \(from))" }
        if env["OPENBLAS_CORETYPE"] != nil { return "OPENBLAS_CORETYPE" }
        return "OpenBLAS detection"
    }

    /// The BLAS set-up of a run, as run files and benchmark output record it.
    public struct Record: Codable, Equatable {
        public var core: String
        public var origin: String
        /// OpenBLAS's own threads: 1 (the GEMM layer splits products across `Threads.count` itself).
        public var blasThreads: Int
        /// `--threads` as given (0: the default, the cores the rank may use).
        public var threads: Int
        public var library: String
        public var dictionary: [String: Any] {
            ["core": core, "origin": origin, "blas_threads": blasThreads, "threads": threads, "library": library]
        }
    }

    public static func record(requestedThreads: Int) -> Record {
        Record(core: name, origin: origin, blasThreads: threads, threads: requestedThreads, library: buildConfig)
    }

    // MARK: - Choosing

    /// Instruction-set levels, in order: what a core needs and what a CPU offers.
    public enum Level: Int, Comparable, CustomStringConvertible {
        case sse = 0, avx, avx2, avx512, avx512bf16
        public static func < (a: Level, b: Level) -> Bool { a.rawValue < b.rawValue }
        public var description: String { ["SSE", "AVX", "AVX2+FMA", "AVX-512", "AVX-512+BF16"][rawValue] }
        /// The OpenBLAS 0.3.21 x86-64 core that is best at this level.
        public var core: String? { [nil, "Sandybridge", "Haswell", "SkylakeX", "Cooperlake"][rawValue] }
        /// The /proc/cpuinfo flags a CPU needs for this level's kernels.
        public var requiredFlags: [String] {
            let avx512 = ["avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd"]
            return [[], ["avx"], ["avx", "avx2", "fma"], ["avx", "avx2", "fma"] + avx512,
                    ["avx", "avx2", "fma"] + avx512 + ["avx512_bf16"]][rawValue]
        }
    }

    /// The level an OpenBLAS core's kernels are written for. Unknown names count as the lowest level only
    /// if they are known generic fallbacks; anything else (a newer core than we know) is left alone.
    public static func level(ofCore core: String) -> Level? {
        switch core.lowercased() {
        case "prescott", "core2", "penryn", "dunnington", "nehalem", "atom", "katmai", "coppermine", "northwood",
             "banias", "opteron", "opteron_sse3", "barcelona", "bobcat", "nano", "generic", "unknown":
            return .sse
        case "sandybridge", "bulldozer", "piledriver", "steamroller": return .avx
        case "haswell", "zen", "excavator": return .avx2
        case "skylakex": return .avx512
        case "cooperlake", "sapphirerapids": return .avx512bf16
        default: return nil
        }
    }

    /// The best level a CPU supports, from the `flags` line of /proc/cpuinfo. The kernel lists a flag only
    /// when the OS also saves that register state, which is what a kernel needs (CPUID alone is not enough).
    public static func level(ofFlags flags: Set<Substring>) -> Level {
        [Level.avx512bf16, .avx512, .avx2, .avx].first { CPUFeatures.missing($0.requiredFlags, from: flags).isEmpty } ?? .sse
    }

    /// What to do at start-up: nil to keep the running core, or the core to re-execute with.
    public static func decide(environment env: [String: String], chosenCore: String, cpuFlags: Set<Substring>?) -> (core: String, cpu: Level)? {
        if env[switchVariable] == "0" || env["OPENBLAS_CORETYPE"] != nil || env[autoFromVariable] != nil { return nil }
        guard let flags = cpuFlags, let have = level(ofCore: env[pretendVariable] ?? chosenCore) else { return nil }
        let cpu = level(ofFlags: flags)
        guard have < cpu, let best = cpu.core else { return nil }
        return (best, cpu)
    }

    /// Why the user's OPENBLAS_CORETYPE cannot run here, or nil: it names kernels written for instructions this
    /// CPU lacks (OpenBLAS loads them as told and dies with SIGILL in the first product). Unknown names, and
    /// CPUs whose flags cannot be read, are left to OpenBLAS.
    public static func unrunnableCoreType(environment env: [String: String], cpuFlags: Set<Substring>?) -> String? {
        guard let asked = env["OPENBLAS_CORETYPE"], let flags = cpuFlags, let kernels = level(ofCore: asked) else { return nil }
        // Cooperlake's and Sapphire Rapids' sgemm kernels are SkylakeX's: only their bf16 GEMMs (never called
        // here) need AVX512-BF16, and the suite passed with them on AVX-512 CPUs without it (docs/testing.md).
        let needs = min(kernels, .avx512)
        let lacking = CPUFeatures.missing(needs.requiredFlags, from: flags)
        guard !lacking.isEmpty else { return nil }
        let cpu = level(ofFlags: flags)
        let instead = cpu.core.map { "set OPENBLAS_CORETYPE=\($0) (the best kernels for this CPU's \(cpu))" } ?? "set a core for SSE CPUs"
        return "OPENBLAS_CORETYPE=\(asked) names OpenBLAS kernels for \(needs), and this CPU lacks \(lacking.joined(separator: ", ")): "
            + "unset OPENBLAS_CORETYPE (esft then runs the best kernels this CPU supports) or \(instead)"
    }

    /// Call first thing in `main`, before MPI or threads start. Re-executes this program once with
    /// OPENBLAS_CORETYPE set when OpenBLAS chose kernels older than the CPU supports; afterwards (in the new
    /// process) prints one line on rank 0 saying so. Returns normally when nothing is to be done or exec fails.
    public static func ensureBestCore() {
        let env = ProcessInfo.processInfo.environment
        if let from = env[autoFromVariable], isRankZero(env) {
            FileHandle.standardError.write(Data("esft: OpenBLAS chose its \(from) kernels on this CPU; running with OPENBLAS_CORETYPE=\(name) instead (ESFT_BLAS_AUTOCORE=0 keeps OpenBLAS's choice)\n".utf8))
        }
        guard let (core, _) = decide(environment: env, chosenCore: name, cpuFlags: CPUFeatures.flags(environment: env)) else { return }
        setenv("OPENBLAS_CORETYPE", core, 1)
        setenv(autoFromVariable, env[pretendVariable] ?? name, 1)
        let argv = CommandLine.unsafeArgv
        execv("/proc/self/exe", argv)
        // exec failed (no /proc?): carry on with the kernels we have, and say so.
        unsetenv("OPENBLAS_CORETYPE"); unsetenv(autoFromVariable)
        if isRankZero(env) {
            FileHandle.standardError.write(Data("esft: OpenBLAS runs its \(name) kernels, older than this CPU supports, and re-executing with OPENBLAS_CORETYPE=\(core) failed (errno \(errno)); set OPENBLAS_CORETYPE=\(core) yourself\n".utf8))
        }
    }

    /// Rank 0, or not launched by mpirun/srun at all. MPI is not initialised yet, so ask the launcher's variables.
    static func isRankZero(_ env: [String: String]) -> Bool {
        let rank = env["OMPI_COMM_WORLD_RANK"] ?? env["PMIX_RANK"] ?? env["PMI_RANK"] ?? env["SLURM_PROCID"] ?? "0"
        return rank == "0"
    }
}

import Foundation

/// What this CPU can run, from the `flags` line of /proc/cpuinfo. The kernel lists a flag only when the OS
/// also saves that register state, which is what a kernel needs (CPUID alone is not enough). The checks
/// made before anything computes (OPENBLAS_CORETYPE, `--compute bf16`) name the flags they find missing.
public enum CPUFeatures {
    /// For tests on any host: act on these space-separated flags instead of /proc/cpuinfo's (e.g. an AVX2-only
    /// CPU's on an AVX-512 machine, to exercise the refusals a Zen 3 gets).
    public static let pretendVariable = "ESFT_PRETEND_CPU_FLAGS"

    /// The flags esft acts on: the pretend variable's when set, else the first processor's (nil where
    /// /proc/cpuinfo has none, e.g. not Linux x86).
    public static func flags(environment env: [String: String] = ProcessInfo.processInfo.environment) -> Set<Substring>? {
        if let pretend = env[pretendVariable] { return Set(pretend.split(separator: " ")) }
        guard let handle = FileHandle(forReadingAtPath: "/proc/cpuinfo") else { return nil }
        defer { try? handle.close() }
        // The first processor's block is well inside 64 KiB on every CPU seen.
        guard let data = try? handle.read(upToCount: 1 << 16) else { return nil }
        let text = String(decoding: data, as: UTF8.self)
        guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix("flags") }),
              let colon = line.firstIndex(of: ":") else { return nil }
        return Set(line[line.index(after: colon)...].split(separator: " "))
    }

    /// The flags of `required` that `flags` lacks, in the order given.
    public static func missing(_ required: [String], from flags: Set<Substring>) -> [String] {
        required.filter { !flags.contains(Substring($0)) }
    }

    /// The flags oneDNN 2.6 needs before it creates any bf16 primitive (its `avx512_core`: bf16 products are
    /// emulated there and native from `avx512_core_bf16`; below it, even its reference matmul refuses bf16).
    public static let oneDNNBF16Flags = ["avx512f", "avx512bw", "avx512vl", "avx512dq"]
}

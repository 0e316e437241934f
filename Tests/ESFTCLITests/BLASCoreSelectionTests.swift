import ESFTKernels
import ESFTTestSupport
import Foundation
import XCTest

/// The re-execution with OPENBLAS_CORETYPE, run for real. OpenBLAS detects the CPUs of most machines, so
/// ESFT_BLAS_PRETEND_CORE makes esft act as if OpenBLAS had fallen back to Prescott; the re-executed
/// process must then run the best core this CPU supports, say so once, and record how it got there.
final class BLASCoreSelectionTests: XCTestCase {
    static let tiny = Fixtures.root.deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("configs/tiny.json").path
    let bench = ["bench", "--config", tiny, "--steps", "1", "--batch", "1", "--seq", "8", "--trainable", "none", "--threads", "1", "--json"]

    private func blasRecord(_ r: Executables.Result) throws -> [String: Any] {
        XCTAssertEqual(r.status, 0, r.stderr)
        let json = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any], r.stdout)
        return try XCTUnwrap(json["blas"] as? [String: Any], "bench output records the BLAS set-up")
    }

    func testBenchRecordsTheBLASCore() throws {
        let blas = try blasRecord(try Executables.esft(bench))
        XCTAssertEqual(blas["threads"] as? Int, 1, "--threads as given")
        XCTAssertEqual(blas["blas_threads"] as? Int, 1, "OpenBLAS was told --threads")
        let core = try XCTUnwrap(blas["core"] as? String)
        XCTAssertFalse(core.isEmpty)
        // Whatever OpenBLAS detected is never below what this CPU supports, unless the environment says so.
        if ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"] == nil, let flags = CPUFeatures.flags(),
           let level = BLASCore.level(ofCore: core) {
            XCTAssertGreaterThanOrEqual(level, BLASCore.level(ofFlags: flags), "running \(core) on a \(BLASCore.level(ofFlags: flags)) CPU")
        }
    }

    /// `--gemm` and `--compute` reach the GEMM layer and are recorded next to the BLAS record.
    func testBenchRecordsTheGEMMBackend() throws {
        var r = try Executables.esft(bench)
        XCTAssertEqual(r.status, 0, r.stderr)
        var json = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        XCTAssertEqual((json["gemm"] as? [String: Any])?["backend"] as? String, "openblas", "the default")
        try XCTSkipUnless(OneDNN.isAvailable, "oneDNN's CPU engine is not available here (scripts/setup.sh installs libdnnl-dev)")
        r = try Executables.esft(bench + ["--gemm", "cuda"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssert(r.stderr.contains("--gemm must be auto, openblas or onednn, got 'cuda'"), r.stderr)
        if let problem = OneDNN.bf16Problem { throw XCTSkip("no bf16 products on this CPU: \(problem)") }
        r = try Executables.esft(bench + ["--gemm", "onednn", "--compute", "bf16"])
        XCTAssertEqual(r.status, 0, r.stderr)
        json = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        let gemm = try XCTUnwrap(json["gemm"] as? [String: Any])
        XCTAssertEqual(gemm["backend"] as? String, "onednn")
        XCTAssertEqual(gemm["compute"] as? String, "bf16")
    }

    /// OPENBLAS_CORETYPE naming kernels this CPU cannot run (SkylakeX on a Zen 3) is refused before anything
    /// runs: one line naming the variable, the kernels and the missing flags, exit 1, no output. On every
    /// host, by pretending a Zen 3's flags (OpenBLAS really loads the named kernels; esft stops before a
    /// product); on a host that truly lacks AVX-512, also without pretending.
    func testUnrunnableCoreTypeIsRefusedBeforeAnythingRuns() throws {
        let dir = try Fixtures.tempDirectory("coretype")
        defer { try? FileManager.default.removeItem(at: dir) }
        let model = Fixtures.models.appendingPathComponent("group_bf16_tied")
        let zen3 = "fpu sse2 ssse3 sse4_1 sse4_2 avx avx2 fma f16c bmi2"
        var cases: [(String, [String: String])] = [("SkylakeX", [CPUFeatures.pretendVariable: zen3]),
                                                   ("Cooperlake", [CPUFeatures.pretendVariable: zen3])]
        if let flags = CPUFeatures.flags(), !CPUFeatures.missing(["avx512f"], from: flags).isEmpty { cases.append(("SkylakeX", [:])) }
        for (core, pretend) in cases {
            let out = dir.appendingPathComponent("\(core).safetensors")
            let r = try Executables.esft(["forward", "--model", model.path, "--tokens", model.appendingPathComponent("inputs.json").path,
                                          "--out", out.path], environment: pretend.merging(["OPENBLAS_CORETYPE": core]) { $1 })
            XCTAssertEqual(r.status, 1, "\(core) \(pretend): \(r.stderr)")
            let lines = r.stderr.split(separator: "\n")
            XCTAssertEqual(lines.count, 1, r.stderr)
            XCTAssert(r.stderr.hasPrefix("esft forward: error: OPENBLAS_CORETYPE=\(core) names OpenBLAS kernels for AVX-512"), r.stderr)
            XCTAssert(r.stderr.contains("this CPU lacks avx512"), r.stderr)
            XCTAssertEqual(r.stdout, "")
            XCTAssertFalse(FileManager.default.fileExists(atPath: out.path))
        }
    }

    func testFallbackIsReexecutedWithTheBestCore() throws {
        guard let flags = CPUFeatures.flags() else { throw XCTSkip("no /proc/cpuinfo flags here") }
        let best = BLASCore.level(ofFlags: flags)
        guard let bestCore = best.core else { throw XCTSkip("this CPU has no vector level above SSE: nothing to switch to") }
        if let user = ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"] {
            // The environment chose: it is respected, and no re-execution happens.
            let r = try Executables.esft(bench, environment: ["ESFT_BLAS_PRETEND_CORE": "Prescott"])
            XCTAssertEqual(try blasRecord(r)["origin"] as? String, "OPENBLAS_CORETYPE")
            XCTAssertFalse(r.stderr.contains("OpenBLAS chose"), r.stderr)
            throw XCTSkip("OPENBLAS_CORETYPE=\(user) is set here and was respected; the re-execution itself was not exercised")
        }
        let r = try Executables.esft(bench, environment: ["ESFT_BLAS_PRETEND_CORE": "Prescott"])
        let blas = try blasRecord(r)
        XCTAssertEqual(blas["core"] as? String, bestCore, "the best core for \(best)")
        XCTAssertEqual(blas["origin"] as? String, "esft (OpenBLAS chose Prescott)")
        XCTAssertEqual(r.stderr.components(separatedBy: "OpenBLAS chose its Prescott kernels").count - 1, 1, "one line: \(r.stderr)")
        // Off switch: OpenBLAS's (pretended) choice stays, nothing is said.
        let off = try Executables.esft(bench, environment: ["ESFT_BLAS_PRETEND_CORE": "Prescott", "ESFT_BLAS_AUTOCORE": "0"])
        XCTAssertEqual(try blasRecord(off)["origin"] as? String, "OpenBLAS detection")
        XCTAssertFalse(off.stderr.contains("OpenBLAS chose"), off.stderr)
        // A user's own choice, even a worse one, is kept.
        let user = try Executables.esft(bench, environment: ["ESFT_BLAS_PRETEND_CORE": "Prescott", "OPENBLAS_CORETYPE": "Haswell"])
        let userBLAS = try blasRecord(user)
        XCTAssertEqual(userBLAS["core"] as? String, "Haswell")
        XCTAssertEqual(userBLAS["origin"] as? String, "OPENBLAS_CORETYPE")
    }

    /// Under mpirun every rank re-executes (same PID, same launcher environment), the job still forms, and
    /// only rank 0 says so.
    func testReexecutionUnderMPIRun() throws {
        if let why = MPIRun.unavailableReason { throw XCTSkip(why) }
        guard ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"] == nil else { throw XCTSkip("OPENBLAS_CORETYPE is set here") }
        guard CPUFeatures.flags().map({ BLASCore.level(ofFlags: $0).core != nil }) == true else { throw XCTSkip("no better core to switch to") }
        let r = try MPIRun.run(ranks: 2, arguments: ["mpi-check"], environment: ["ESFT_BLAS_PRETEND_CORE": "Prescott"], timeout: 300)
        XCTAssertFalse(r.timedOut)
        XCTAssertEqual(r.status, 0, r.output)
        XCTAssertEqual(r.stderr.components(separatedBy: "OpenBLAS chose its Prescott kernels").count - 1, 1, r.output)
    }
}

import ESFTKernels
import XCTest

/// The start-up choice of OpenBLAS kernels (BLASCore.decide): when esft re-executes itself with
/// OPENBLAS_CORETYPE, and when it must leave the user's or OpenBLAS's choice alone.
final class BLASCoreTests: XCTestCase {
    static let avx512 = Set(["sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd"].map { Substring($0) })
    static let sapphireRapids = avx512.union(["avx512_bf16", "amx_bf16", "amx_tile"])
    static let haswellOnly = Set(["sse4_2", "avx", "avx2", "fma"].map { Substring($0) })

    func testCPUFlagsGiveTheBestLevel() {
        XCTAssertEqual(BLASCore.level(ofFlags: Self.sapphireRapids), .avx512bf16)
        XCTAssertEqual(BLASCore.level(ofFlags: Self.avx512), .avx512)
        XCTAssertEqual(BLASCore.level(ofFlags: Self.haswellOnly), .avx2)
        // AVX-512F without BW/VL is not what SkylakeX's kernels need (Knights Landing had that).
        XCTAssertEqual(BLASCore.level(ofFlags: Self.haswellOnly.union(["avx512f", "avx512cd"])), .avx2)
        XCTAssertEqual(BLASCore.level(ofFlags: ["avx"]), .avx)
        XCTAssertEqual(BLASCore.level(ofFlags: ["sse2"]), .sse)
    }

    func testFallbackCoresAreReplacedByTheBestTheCPUSupports() {
        // The case that motivated this: OpenBLAS 0.3.21 on Sapphire/Emerald Rapids picks Prescott.
        XCTAssertEqual(BLASCore.decide(environment: [:], chosenCore: "Prescott", cpuFlags: Self.sapphireRapids)?.core, "Cooperlake")
        XCTAssertEqual(BLASCore.decide(environment: [:], chosenCore: "Haswell", cpuFlags: Self.avx512)?.core, "SkylakeX")
        XCTAssertEqual(BLASCore.decide(environment: [:], chosenCore: "Sandybridge", cpuFlags: Self.haswellOnly)?.core, "Haswell")
        XCTAssertEqual(BLASCore.decide(environment: [:], chosenCore: "Nehalem", cpuFlags: Self.haswellOnly)?.core, "Haswell")
    }

    func testCorrectChoicesAndTheUsersAreLeftAlone() {
        XCTAssertNil(BLASCore.decide(environment: [:], chosenCore: "SkylakeX", cpuFlags: Self.avx512))
        XCTAssertNil(BLASCore.decide(environment: [:], chosenCore: "Cooperlake", cpuFlags: Self.sapphireRapids))
        XCTAssertNil(BLASCore.decide(environment: [:], chosenCore: "Haswell", cpuFlags: Self.haswellOnly))
        // A core newer than we know is never "upgraded" to an older one.
        XCTAssertNil(BLASCore.decide(environment: [:], chosenCore: "Sapphirerapids", cpuFlags: Self.sapphireRapids))
        XCTAssertNil(BLASCore.decide(environment: [:], chosenCore: "SomeFutureCore", cpuFlags: Self.sapphireRapids))
        // The user's own OPENBLAS_CORETYPE, the off switch, and an already re-executed process.
        XCTAssertNil(BLASCore.decide(environment: ["OPENBLAS_CORETYPE": "Prescott"], chosenCore: "Prescott", cpuFlags: Self.sapphireRapids))
        XCTAssertNil(BLASCore.decide(environment: ["ESFT_BLAS_AUTOCORE": "0"], chosenCore: "Prescott", cpuFlags: Self.sapphireRapids))
        XCTAssertNil(BLASCore.decide(environment: ["ESFT_BLAS_AUTOCORE_FROM": "Prescott"], chosenCore: "Prescott", cpuFlags: Self.sapphireRapids))
        // No /proc/cpuinfo: nothing to decide on.
        XCTAssertNil(BLASCore.decide(environment: [:], chosenCore: "Prescott", cpuFlags: nil))
        // The test hook acts as if OpenBLAS had chosen the pretended core.
        XCTAssertEqual(BLASCore.decide(environment: ["ESFT_BLAS_PRETEND_CORE": "Prescott"], chosenCore: "SkylakeX", cpuFlags: Self.avx512)?.core, "SkylakeX")
    }

    /// OPENBLAS_CORETYPE naming kernels for instructions the CPU lacks is refused, naming them; runnable,
    /// unknown or absent ones are left alone.
    func testUnrunnableCoreTypeIsNamed() throws {
        let zen3 = Self.haswellOnly
        let why = try XCTUnwrap(BLASCore.unrunnableCoreType(environment: ["OPENBLAS_CORETYPE": "SkylakeX"], cpuFlags: zen3))
        XCTAssert(why.hasPrefix("OPENBLAS_CORETYPE=SkylakeX names OpenBLAS kernels for AVX-512, and this CPU lacks avx512f, avx512bw"), why)
        XCTAssert(why.contains("OPENBLAS_CORETYPE=Haswell"), why)
        let cooper = try XCTUnwrap(BLASCore.unrunnableCoreType(environment: ["OPENBLAS_CORETYPE": "cooperlake"], cpuFlags: zen3))
        XCTAssert(cooper.hasPrefix("OPENBLAS_CORETYPE=cooperlake names OpenBLAS kernels for AVX-512, and this CPU lacks avx512f"), cooper)
        // Its sgemm kernels are SkylakeX's: they run on AVX-512 without BF16.
        XCTAssertNil(BLASCore.unrunnableCoreType(environment: ["OPENBLAS_CORETYPE": "Cooperlake"], cpuFlags: Self.avx512))
        XCTAssertNotNil(BLASCore.unrunnableCoreType(environment: ["OPENBLAS_CORETYPE": "Haswell"], cpuFlags: ["sse2", "avx"]))
        XCTAssertNil(BLASCore.unrunnableCoreType(environment: ["OPENBLAS_CORETYPE": "Haswell"], cpuFlags: zen3))
        XCTAssertNil(BLASCore.unrunnableCoreType(environment: ["OPENBLAS_CORETYPE": "Zen"], cpuFlags: zen3))
        XCTAssertNil(BLASCore.unrunnableCoreType(environment: ["OPENBLAS_CORETYPE": "Prescott"], cpuFlags: ["sse2"]))
        XCTAssertNil(BLASCore.unrunnableCoreType(environment: ["OPENBLAS_CORETYPE": "SkylakeX"], cpuFlags: Self.sapphireRapids))
        XCTAssertNil(BLASCore.unrunnableCoreType(environment: ["OPENBLAS_CORETYPE": "SomeFutureCore"], cpuFlags: zen3))
        XCTAssertNil(BLASCore.unrunnableCoreType(environment: [:], cpuFlags: zen3))
        XCTAssertNil(BLASCore.unrunnableCoreType(environment: ["OPENBLAS_CORETYPE": "SkylakeX"], cpuFlags: nil))
    }

    /// The pretend variable replaces /proc/cpuinfo's flags (the refusal tests run on any host with it).
    func testPretendedFlagsReplaceTheCPUs() {
        XCTAssertEqual(CPUFeatures.flags(environment: [CPUFeatures.pretendVariable: "avx avx2 fma"]), ["avx", "avx2", "fma"])
        XCTAssertEqual(CPUFeatures.missing(["avx2", "avx512f", "fma"], from: ["avx2", "fma"]), ["avx512f"])
    }

    /// Every level's core is one OpenBLAS 0.3.21 knows, and maps back to its level.
    func testCoresAndLevelsAgree() {
        for level in [BLASCore.Level.avx, .avx2, .avx512, .avx512bf16] {
            let core = try! XCTUnwrap(level.core)
            XCTAssertEqual(BLASCore.level(ofCore: core), level, core)
        }
        XCTAssertEqual(BLASCore.level(ofCore: "Prescott"), .sse)
        XCTAssertFalse(BLASCore.name.isEmpty)
    }
}

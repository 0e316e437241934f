import ESFTKernels
import ESFTStore
import ESFTTestSupport
import Foundation
import XCTest

/// `esft forward` as a user runs it: on a fixture model its output matches the HF reference; bad input
/// gives a clear message, a non-zero exit, and no output file.
final class ForwardCommandTests: XCTestCase {
    private var dir: URL!
    override func setUpWithError() throws { dir = try Fixtures.tempDirectory("cli") }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    private func floats(_ file: SafetensorsFile, _ name: String) throws -> [Float] {
        let e = try XCTUnwrap(file.entries[name], "\(file.path) has no \(name)")
        var out = [Float](repeating: 0, count: e.count)
        out.withUnsafeMutableBufferPointer { file.readFloats(e, count: e.count, into: $0.baseAddress!) }
        return out
    }

    func testForwardOutputMatchesTheFixture() throws {
        try checkForwardMatchesFixtures()
    }

    /// OpenBLAS's AVX2 kernels (what a Zen 3 runs; `Zen` is `Haswell`'s kernels under another name) on any host
    /// that has AVX2: the same bounds against the fixtures.
    func testForwardOnOpenBLASAVX2KernelsMatchesTheFixture() throws {
        let flags = try XCTUnwrap(CPUFeatures.flags(), "no /proc/cpuinfo flags")
        let lacking = CPUFeatures.missing(BLASCore.Level.avx2.requiredFlags, from: flags)
        try XCTSkipUnless(lacking.isEmpty, "OpenBLAS's Haswell kernels need \(lacking.joined(separator: ", ")), which this CPU lacks")
        XCTAssertEqual(try benchRecord(environment: ["OPENBLAS_CORETYPE": "Haswell"])["blas"]?["core"] as? String, "Haswell",
                       "the kernels asked for are the kernels that ran")
        try checkForwardMatchesFixtures(environment: ["OPENBLAS_CORETYPE": "Haswell"])
    }

    /// What `esft bench --json` records of the BLAS and GEMM set-up under these options and environment.
    func benchRecord(_ extra: [String] = [], environment: [String: String]) throws -> [String: [String: Any]] {
        let tiny = Fixtures.root.deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("configs/tiny.json").path
        let r = try Executables.esft(["bench", "--config", tiny, "--steps", "1", "--batch", "1", "--seq", "8", "--trainable", "none",
                                      "--threads", "1", "--json"] + extra, environment: environment)
        XCTAssertEqual(r.status, 0, r.stderr)
        let json = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any], r.stdout)
        return json.compactMapValues { $0 as? [String: Any] }
    }

    /// oneDNN capped at AVX2 (what it runs on a Zen 3) for the fp32 products, on any host.
    func testForwardOnOneDNNCappedAtAVX2MatchesTheFixture() throws {
        try XCTSkipUnless(OneDNN.isAvailable, "oneDNN's CPU engine is not available here (scripts/setup.sh installs libdnnl-dev)")
        XCTAssertEqual(try benchRecord(["--gemm", "onednn"], environment: ["DNNL_MAX_CPU_ISA": "AVX2"])["gemm"]?["onednn_isa"] as? String, "avx2",
                       "oneDNN ran capped at AVX2")
        try checkForwardMatchesFixtures(extra: ["--gemm", "onednn"], environment: ["DNNL_MAX_CPU_ISA": "AVX2"])
    }

    /// `esft forward --grads` on two fixtures (sharded HF directory; bf16 weights, group-limited routing, tied
    /// head) against transformers' logits, loss and gradients.
    func checkForwardMatchesFixtures(extra: [String] = [], environment: [String: String] = [:]) throws {
        for name in ["sharded_hf_saved", "group_bf16_tied"] {
            let model = Fixtures.models.appendingPathComponent(name)
            let out = dir.appendingPathComponent("\(name).safetensors")
            let r = try Executables.esft(["forward", "--model", model.path, "--tokens", model.appendingPathComponent("inputs.json").path,
                                          "--out", out.path, "--grads", "--threads", "2"] + extra, environment: environment)
            XCTAssertEqual(r.status, 0, r.stderr)
            XCTAssert(r.stdout.contains("loss"), r.stdout)
            let got = try SafetensorsFile(path: out.path)
            let expected = try SafetensorsFile(path: model.appendingPathComponent("expected.safetensors").path)
            let logits = try floats(got, "logits")
            XCTAssertEqual(got.entries["logits"]?.shape.count, 3)
            XCTAssertLessThan(logits.withUnsafeBufferPointer { relativeToMax($0, try! floats(expected, "logits")) }, 1e-4, name)
            XCTAssertEqual(Double(try floats(got, "loss")[0]), Double(try floats(expected, "loss")[0]), accuracy: 1e-4 * 5, name)
            let gradNames = got.entries.keys.filter { $0.hasPrefix("grad.") }
            XCTAssertEqual(Set(gradNames), Set(expected.entries.keys.filter { $0.hasPrefix("grad.") }), "\(name): one gradient per parameter, per-expert names")
            for g in gradNames {
                let a = try floats(got, g)
                XCTAssertLessThan(a.withUnsafeBufferPointer { relativeToMax($0, try! floats(expected, g)) }, 1e-3, "\(name): \(g)")
            }
        }
    }

    func testTrainableSubsetAndNoGrads() throws {
        let model = Fixtures.models.appendingPathComponent("lite_yarn_oldcfg")
        let out = dir.appendingPathComponent("o.safetensors")
        var r = try Executables.esft(["forward", "--model", model.path, "--tokens", model.appendingPathComponent("inputs.json").path,
                                      "--out", out.path, "--trainable", "model.layers.2.mlp.experts.*,lm_head.weight"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let got = try SafetensorsFile(path: out.path)
        let grads = got.entries.keys.filter { $0.hasPrefix("grad.") }
        XCTAssertEqual(grads.count, 8 * 3 + 1)
        XCTAssert(grads.contains("grad.model.layers.2.mlp.experts.5.up_proj.weight"))
        r = try Executables.esft(["forward", "--model", model.path, "--tokens", model.appendingPathComponent("inputs.json").path, "--out", out.path])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(try SafetensorsFile(path: out.path).entries.keys.filter { $0.hasPrefix("grad.") }.count, 0)
    }

    /// Each bad input: non-zero exit, a message naming the file and the field or tensor, no output written.
    func testBadInputIsAClearErrorAndWritesNothing() throws {
        let fixture = Fixtures.models.appendingPathComponent("lite_yarn_oldcfg")
        let tokens = fixture.appendingPathComponent("inputs.json").path
        func expectFailure(_ args: [String], mentions: [String], file: StaticString = #filePath, line: UInt = #line) throws {
            let out = dir.appendingPathComponent("out-\(UUID().uuidString).safetensors")
            let r = try Executables.esft(["forward"] + args + ["--out", out.path])
            XCTAssertNotEqual(r.status, 0, "should fail: \(args)", file: file, line: line)
            for m in mentions { XCTAssert(r.stderr.contains(m), "stderr '\(r.stderr)' should mention '\(m)'", file: file, line: line) }
            XCTAssertFalse(r.stderr.contains("Fatal error"), "no crash: \(r.stderr)", file: file, line: line)
            let leftovers = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.contains("out-") }
            XCTAssertEqual(leftovers, [], "nothing half-written", file: file, line: line)
        }
        func modelCopy(_ tag: String, edit: (URL) throws -> Void) throws -> String {
            let m = dir.appendingPathComponent(tag)
            try FileManager.default.copyItem(at: fixture, to: m)
            try edit(m)
            return m.path
        }
        func writeTokens(_ json: String) throws -> String {
            let p = dir.appendingPathComponent("tok-\(UUID().uuidString).json")
            try Data(json.utf8).write(to: p)
            return p.path
        }

        let noConfig = try modelCopy("noconfig") { try FileManager.default.removeItem(at: $0.appendingPathComponent("config.json")) }
        try expectFailure(["--model", noConfig, "--tokens", tokens], mentions: ["config.json"])
        let badConfig = try modelCopy("badconfig") { try Data("{\"model_type\": \"deepseek_v2\",".utf8).write(to: $0.appendingPathComponent("config.json")) }
        try expectFailure(["--model", badConfig, "--tokens", tokens], mentions: ["config.json", "JSON"])
        let truncated = try modelCopy("truncated") { m in
            let f = m.appendingPathComponent("model.safetensors")
            let data = try Data(contentsOf: f)
            try data.prefix(data.count / 2).write(to: f)
        }
        try expectFailure(["--model", truncated, "--tokens", tokens], mentions: ["model.safetensors", "past the end"])
        try expectFailure(["--model", fixture.path, "--tokens", try writeTokens(#"{"input_ids": [[1, 2, 100000]]}"#)],
                          mentions: ["tok-", "token id 100000", "vocab"])
        try expectFailure(["--model", fixture.path, "--tokens", try writeTokens(#"{"input_ids": [[1, 2], [3]]}"#)],
                          mentions: ["input_ids", "same length"])
        try expectFailure(["--model", fixture.path, "--tokens", try writeTokens(#"{"input_ids": [[1, 2]], "labels": [[1]]}"#)],
                          mentions: ["labels", "shape"])
        try expectFailure(["--model", fixture.path, "--tokens", try writeTokens(#"{"input_ids": [[1, 2]], "lables": [[1, 2]]}"#)],
                          mentions: ["unknown field 'lables'"])
        try expectFailure(["--model", fixture.path, "--tokens", tokens, "--trainable", "model.layers.9.*"], mentions: ["matches no parameter"])
        try expectFailure(["--model", fixture.path, "--tokens", tokens, "--bogus"], mentions: ["unknown option '--bogus'"])
        try expectFailure(["--tokens", tokens], mentions: ["--model is required"])
    }

    func testHelpDocumentsTheCommand() throws {
        let r = try Executables.esft(["forward", "--help"])
        XCTAssertEqual(r.status, 0)
        for word in ["--model", "--tokens", "--out", "--grads", "--trainable", "labels[t+1]", "grad.<name>"] {
            XCTAssert(r.stdout.contains(word), "help mentions \(word)")
        }
    }
}

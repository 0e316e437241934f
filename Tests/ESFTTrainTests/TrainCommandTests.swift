import ESFTKernels
import ESFTStore
import ESFTTestSupport
import Foundation
import XCTest

/// `esft train` as a user runs it: Hugging Face directories, what it records, what it leaves untouched,
/// and bad input.
final class TrainCommandTests: TrainTestCase {
    override class var tag: String { "train-cli" }

    /// run.json (before the first step) and summary.json record the BLAS core, its threads and --threads.
    func testRunRecordsBLASAndOptions() throws {
        let run = try train(ranks: 2, ["--experts", path("experts.json")], tag: "record", steps: 2)
        let record = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: run.out.appendingPathComponent("run.json"))) as? [String: Any])
        let blas = try XCTUnwrap(record["blas"] as? [String: Any])
        XCTAssertFalse((blas["core"] as? String ?? "").isEmpty)
        XCTAssertEqual(blas["threads"] as? Int, 1, "--threads 1")
        XCTAssertEqual(blas["blas_threads"] as? Int, 1)
        XCTAssertEqual(record["ranks"] as? Int, 2)
        XCTAssertEqual(record["blas_core_same_on_every_rank"] as? Bool, true)
        XCTAssertEqual((record["options"] as? [String: Any])?["steps"] as? Int, 2)
        let summary = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: run.out.appendingPathComponent("summary.json"))) as? [String: Any])
        let sblas = try XCTUnwrap(summary["blas"] as? [String: Any])
        XCTAssertEqual(sblas["core"] as? String, blas["core"] as? String)
        XCTAssertEqual(sblas["threads"] as? Int, 1)
        XCTAssert(run.stdout.contains("OpenBLAS \(blas["core"] as! String) kernels"), run.stdout)
        for (file, json) in [("run.json", record), ("summary.json", summary)] {
            let gemm = try XCTUnwrap(json["gemm"] as? [String: Any], "\(file) records the GEMM set-up")
            XCTAssertEqual(gemm["backend"] as? String, "openblas", "\(file): the default")
            XCTAssertEqual(gemm["compute"] as? String, "fp32", file)
        }
    }

    /// `--gemm onednn` trains the same model to the same losses within fp32 summation-order differences, and
    /// says so in summary.json. Each fp32 product differs between libraries by ≤ 2γ_k relative to Σ|a||b|
    /// (k ≤ 256 here: ~3e-5 worst case, ~1e-6 typical); over 3 steps at lr 1e-4 the losses move by far less
    /// than that allows, so 1e-4 relative on each step's loss is a loose but meaningful bound.
    func testOneDNNBackendTrainsToTheSameLosses() throws {
        try XCTSkipUnless(OneDNN.isAvailable, "oneDNN's CPU engine is not available here (scripts/setup.sh installs libdnnl-dev)")
        let blas = try train(ranks: 1, ["--experts", path("experts.json")], tag: "gemm-blas", steps: 3)
        let dnnl = try train(ranks: 1, ["--experts", path("experts.json")], tag: "gemm-dnnl", steps: 3, extra: ["--gemm", "onednn"])
        let a = try metrics(blas.out).compactMap { $0["loss"] as? Double }, b = try metrics(dnnl.out).compactMap { $0["loss"] as? Double }
        XCTAssertEqual(a.count, 3)
        XCTAssertEqual(a.count, b.count)
        for (x, y) in zip(a, b) { XCTAssertEqual(x, y, accuracy: 1e-4 * abs(x)) }
        let summary = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: dnnl.out.appendingPathComponent("summary.json"))) as? [String: Any])
        let gemm = try XCTUnwrap(summary["gemm"] as? [String: Any])
        XCTAssertEqual(gemm["backend"] as? String, "onednn")
        XCTAssertEqual(gemm["requested"] as? String, "onednn")
        XCTAssertFalse((gemm["onednn_isa"] as? String ?? "").isEmpty)
        let bad = try train(ranks: 1, ["--experts", path("experts.json")], tag: "gemm-bad", steps: 1, extra: ["--compute", "bf16"], expectSuccess: false)
        XCTAssertNotEqual(bad.status, 0)
        XCTAssert(bad.stderr.contains("--compute bf16 needs the oneDNN backend"), bad.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: bad.out.path), "nothing written on bad input")
    }

    /// `--compute bf16` where oneDNN has no bf16 products (Zen 3 and other AVX2-only CPUs) is refused before
    /// anything exists: one line naming the option, what is missing and what to use, exit 1, no --out, on
    /// every rank. oneDNN reads DNNL_MAX_CPU_ISA, so capping it at AVX2 makes any host refuse as a Zen 3 does.
    func testBF16ComputeRefusedWhereOneDNNHasNoBF16() throws {
        try XCTSkipUnless(OneDNN.isAvailable, "oneDNN's CPU engine is not available here (scripts/setup.sh installs libdnnl-dev)")
        let model = dir.appendingPathComponent("model-bf16")
        if !FileManager.default.fileExists(atPath: model.path) {
            let r = try Executables.esft(["init", Self.configsDir.appendingPathComponent("tiny.json").path, model.path,
                                          "--seed", "7", "--dtype", "bf16", "--expert-shards", "2"])
            XCTAssertEqual(r.status, 0, r.stderr)
        }
        for (ranks, gemm) in [(1, "onednn"), (1, "auto"), (2, "onednn")] {
            let run = try train(ranks: ranks, ["--experts", path("experts.json")], tag: "bf16-avx2-\(gemm)", steps: 1,
                                extra: ["--model", model.path, "--gemm", gemm, "--compute", "bf16"],
                                environment: ["DNNL_MAX_CPU_ISA": "AVX2"], expectSuccess: false)
            XCTAssertEqual(run.status, 1, "\(ranks) rank(s), --gemm \(gemm): \(run.stderr)")
            let errors = run.stderr.split(separator: "\n").filter { $0.contains("error") }
            XCTAssertEqual(errors.count, ranks, "one line per rank: \(run.stderr)")
            for e in errors {
                XCTAssert(e.hasPrefix("esft train: error: --compute bf16 cannot run here: "), String(e))
                // The cap is named, or (on a CPU without AVX-512, where the cap changes nothing) the missing flags.
                XCTAssert(e.contains("DNNL_MAX_CPU_ISA=AVX2 limits oneDNN to avx2") || e.contains("this CPU lacks avx512f"), String(e))
                XCTAssert(e.contains("use --compute fp32"), String(e))
            }
            XCTAssertFalse(run.stderr.contains("Fatal error"), run.stderr)
            XCTAssertFalse(FileManager.default.fileExists(atPath: run.out.path), "nothing created: \(run.out.path)")
        }
        // Uncapped, the same request trains where oneDNN has bf16 products (AVX-512 and later).
        if OneDNN.bf16Problem == nil {
            let run = try train(ranks: 1, ["--experts", path("experts.json")], tag: "bf16-native", steps: 1,
                                extra: ["--model", model.path, "--gemm", "onednn", "--compute", "bf16"])
            XCTAssertEqual(run.status, 0, run.stderr)
        }
    }

    /// A Hugging Face directory works under mpirun too (every rank maps every expert, but trains only its
    /// own): the trained tensors equal those from the esft model directory.
    func testHuggingFaceDirectoryUnderMPI() throws {
        let hf = dir.appendingPathComponent("model-hf")
        if !FileManager.default.fileExists(atPath: hf.path) {
            XCTAssertEqual(try Executables.esft(["export", path("model"), hf.path]).status, 0)
        }
        let fromDirectory = try train(ranks: 2, ["--experts", path("experts.json")], tag: "dir", steps: 3)
        let fromHF = try train(ranks: 2, ["--experts", path("experts.json")], tag: "hf", steps: 3, extra: ["--model", hf.path])
        let a = try trained(fromDirectory), b = try trained(fromHF)
        XCTAssertEqual(Set(a.keys), Set(b.keys))
        XCTAssertEqual(a.count, 15, "exactly the 5 selected experts × 3 tensors, each once")
        for (name, v) in a { XCTAssertEqual(v, b[name], name) }
    }

    /// The model directory is mapped read-only: training never writes it (frozen experts never change).
    func testTrainingLeavesTheModelFilesUntouched() throws {
        let files = try FileManager.default.contentsOfDirectory(atPath: path("model")).sorted()
        let before = try files.map { try Data(contentsOf: dir.appendingPathComponent("model").appendingPathComponent($0)) }
        let run = try train(ranks: 2, ["--experts", path("experts.json")], tag: "untouched")
        // export --adapter takes the expert config the run recorded; a different one, or another model, is refused.
        let adapter = dir.appendingPathComponent("adapter")
        try? FileManager.default.removeItem(at: adapter)
        let trained = run.out.appendingPathComponent("trained.safetensors").path
        let ok = try Executables.esft(["export", path("model"), adapter.path, "--trained", trained, "--adapter"])
        XCTAssertEqual(ok.status, 0, ok.stderr)
        XCTAssertEqual(try SafetensorsFile(path: adapter.appendingPathComponent("model.safetensors").path).entries.count, 15)
        let other = dir.appendingPathComponent("other-experts.json")
        try Data(#"{"experts": {"1": [1], "2": [2]}, "shared_experts": false, "non_expert_modules": false}"#.utf8).write(to: other)
        let mismatch = try Executables.esft(["export", path("model"), path("adapter2"), "--trained", trained, "--adapter", "--experts", other.path])
        XCTAssertNotEqual(mismatch.status, 0)
        XCTAssert(mismatch.stderr.contains("differs from the expert config"), mismatch.stderr)
        var cfg = try JSONSerialization.jsonObject(with: Data(contentsOf: Self.configsDir.appendingPathComponent("tiny.json"))) as! [String: Any]
        cfg["num_hidden_layers"] = 4
        let cfgURL = dir.appendingPathComponent("four-layers.json")
        try JSONSerialization.data(withJSONObject: cfg).write(to: cfgURL)
        XCTAssertEqual(try Executables.esft(["init", cfgURL.path, path("four-layers")]).status, 0)
        let wrongModel = try Executables.esft(["export", path("four-layers"), path("hf-wrong"), "--trained", trained])
        XCTAssertNotEqual(wrongModel.status, 0)
        XCTAssert(wrongModel.stderr.contains("trained for a different model"), wrongModel.stderr)
        let after = try files.map { try Data(contentsOf: dir.appendingPathComponent("model").appendingPathComponent($0)) }
        XCTAssertEqual(before, after)
    }

    func testBadInputFailsBeforeAnyWork() throws {
        func expectFailure(ranks: Int, _ mode: [String], extra: [String] = [], mentions: [String], file: StaticString = #filePath, line: UInt = #line) throws {
            let r = try train(ranks: ranks, mode, tag: "bad", extra: extra, expectSuccess: false, file: file, line: line)
            XCTAssertNotEqual(r.status, 0, "should fail", file: file, line: line)
            for m in mentions { XCTAssert(r.stderr.contains(m), "stderr '\(r.stderr)' should mention '\(m)'", file: file, line: line) }
            XCTAssertFalse(FileManager.default.fileExists(atPath: r.out.appendingPathComponent("trained.safetensors").path), file: file, line: line)
        }
        let badLayer = dir.appendingPathComponent("bad-layer.json"), badExpert = dir.appendingPathComponent("bad-expert.json")
        try Data(#"{"experts": {"0": [1], "1": [0], "2": [0]}, "shared_experts": false, "non_expert_modules": false}"#.utf8).write(to: badLayer)
        try Data(#"{"experts": {"1": [0, 99], "2": [0]}, "shared_experts": false, "non_expert_modules": false}"#.utf8).write(to: badExpert)
        try expectFailure(ranks: 1, ["--experts", badLayer.path], mentions: ["bad-layer.json", "0"])
        try expectFailure(ranks: 1, ["--experts", badExpert.path], mentions: ["bad-expert.json", "99"])
        try expectFailure(ranks: 1, ["--full"], extra: ["--batch-rows", "5", "--accumulation", "2"], mentions: ["multiple of --accumulation"])
        // A dataset from another vocabulary.
        let other = dir.appendingPathComponent("vocab300.h5")
        try TokenDatasets.writeRandom(to: other, rows: 10, seqLen: 48, tokenRange: 32..<127, seed: 4, vocabSize: 300)
        let r = try Executables.esft(["train", "--model", path("model"), "--data", other.path, "--out", path("bad-vocab"), "--full"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssert(r.stderr.contains("vocabulary") && r.stderr.contains("259"), r.stderr)
        // More ranks than experts: a two-expert model on three ranks.
        var cfg = try JSONSerialization.jsonObject(with: Data(contentsOf: Self.configsDir.appendingPathComponent("tiny.json"))) as! [String: Any]
        cfg["n_routed_experts"] = 2; cfg["num_experts_per_tok"] = 2
        let cfgURL = dir.appendingPathComponent("two.json")
        try JSONSerialization.data(withJSONObject: cfg).write(to: cfgURL)
        XCTAssertEqual(try Executables.esft(["init", cfgURL.path, path("two-experts")]).status, 0)
        if MPIRun.unavailableReason == nil {
            let m = try MPIRun.run(ranks: 3, arguments: ["train", "--model", path("two-experts"), "--data", path("data.h5"),
                                                         "--out", path("bad-ranks"), "--full", "--batch-rows", "6"], timeout: 300)
            XCTAssertNotEqual(m.status, 0)
            XCTAssert(m.stderr.contains("3 ranks but only 2 routed experts"), m.stderr)
        }
        // Rows longer than the model's positions.
        let long = dir.appendingPathComponent("long.h5")
        try TokenDatasets.writeRandom(to: long, rows: 4, seqLen: 2048, tokenRange: 32..<127, seed: 5)
        let l = try Executables.esft(["train", "--model", path("model"), "--data", long.path, "--out", path("bad-long"), "--full"])
        XCTAssertNotEqual(l.status, 0)
        XCTAssert(l.stderr.contains("do not fit the model's max_position_embeddings 1024"), l.stderr)
        // A training config file: known keys apply, an unknown key is an error naming the file and the key.
        let good = Self.configsDir.appendingPathComponent("train-esft.json")
        let configured = dir.appendingPathComponent("configured")
        let g = try Executables.esft(["train", "--model", path("model"), "--data", path("data.h5"), "--out", configured.path, "--full",
                                      "--config", good.path, "--steps", "2", "--batch-rows", "2", "--accumulation", "1", "--threads", "1"])
        XCTAssertEqual(g.status, 0, g.stderr)
        let lines = try metrics(configured)
        XCTAssertEqual(lines.count, 2, "--steps overrides the file's 500")
        XCTAssertEqual(lines.first?["lr"] as? Double, 1e-5, "lr from configs/train-esft.json")
        let badConfig = dir.appendingPathComponent("train-bad.json")
        try Data(#"{"lr": 1e-5, "learning_rate": 3}"#.utf8).write(to: badConfig)
        let b = try Executables.esft(["train", "--model", path("model"), "--data", path("data.h5"), "--out", path("bad-config"), "--full", "--config", badConfig.path])
        XCTAssertNotEqual(b.status, 0)
        XCTAssert(b.stderr.contains("train-bad.json") && b.stderr.contains("unknown key 'learning_rate'"), b.stderr)
        // A NaN loss stops training before its update; the state after the last good step is kept.
        let nan = try train(ranks: 1, ["--full"], tag: "nan", extra: ["--lr", "1e30", "--grad-clip", "0"], expectSuccess: false)
        XCTAssertNotEqual(nan.status, 0)
        XCTAssert(nan.stderr.contains("loss became") || nan.stderr.contains("gradient norm became"), nan.stderr)
        XCTAssert(nan.stderr.contains("stopped before its update"), nan.stderr)
        let kept = try SafetensorsFile(path: nan.out.appendingPathComponent("trained.safetensors").path)
        let completed = try metrics(nan.out).count
        XCTAssertEqual(kept.metadata["steps"], "\(completed)", "the kept state is the one after the last completed step")
        XCTAssertNotNil(kept.metadata["stopped"])
        for (name, e) in kept.entries {
            var v = [Float](repeating: 0, count: e.count)
            v.withUnsafeMutableBufferPointer { kept.readFloats(e, count: e.count, into: $0.baseAddress!) }
            XCTAssert(v.allSatisfy(\.isFinite), "\(name): nothing from the non-finite step")
        }
    }
}

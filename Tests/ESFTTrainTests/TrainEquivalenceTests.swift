import ESFTKernels
import ESFTStore
import ESFTTestSupport
import Foundation
import XCTest

/// `esft train` on 1 rank (no mpirun) and under real `mpirun -n 2/3/4`: same data and seed give the same
/// loss at every step and the same trained tensors, for an ESFT expert config and for --full.
final class TrainEquivalenceTests: XCTestCase {
    static var dir: URL!
    static let configsDir = Fixtures.root.deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("configs")
    // Experts of the tiny model's two MoE layers chosen so that, on 4 ranks, every rank owns some.
    static let expertConfig = #"{"experts": {"1": [0, 5, 13], "2": [7, 15]}, "shared_experts": false, "non_expert_modules": false}"#

    override class func setUp() {
        dir = try! Fixtures.tempDirectory("train")
        let r = try! Executables.esft(["init", configsDir.appendingPathComponent("tiny.json").path, dir.appendingPathComponent("model").path,
                                       "--seed", "7", "--expert-shards", "4"])
        precondition(r.status == 0, r.stderr)
        try! TokenDatasets.writeRandom(to: dir.appendingPathComponent("data.h5"), rows: 40, seqLen: 48, tokenRange: 32..<127, seed: 3)
        try! Data(expertConfig.utf8).write(to: dir.appendingPathComponent("experts.json"))
    }
    override class func tearDown() { try? FileManager.default.removeItem(at: dir) }

    private func path(_ name: String) -> String { Self.dir.appendingPathComponent(name).path }

    /// Runs `esft train` on `ranks` ranks (1: directly, without mpirun); returns the output directory.
    @discardableResult
    private func train(ranks: Int, _ mode: [String], tag: String, extra: [String] = [], expectSuccess: Bool = true,
                       file: StaticString = #filePath, line: UInt = #line) throws -> (out: URL, stdout: String, stderr: String, status: Int32) {
        let out = Self.dir.appendingPathComponent("\(tag)-\(ranks)")
        try? FileManager.default.removeItem(at: out)
        let args = ["train", "--model", path("model"), "--data", path("data.h5"), "--out", out.path, "--steps", "10",
                    "--batch-rows", "6", "--lr", "1e-4", "--aux-alpha", "0.001", "--eval-every", "5", "--threads", "1"] + mode + extra
        let status: Int32, stdout: String, stderr: String
        if ranks == 1 {
            let r = try Executables.esft(args)
            (status, stdout, stderr) = (r.status, r.stdout, r.stderr)
        } else {
            if let why = MPIRun.unavailableReason { throw XCTSkip(why) }
            let r = try MPIRun.run(ranks: ranks, arguments: args, timeout: 600)
            XCTAssertFalse(r.timedOut, "mpirun -n \(ranks) esft train hung", file: file, line: line)
            (status, stdout, stderr) = (r.status, r.stdout, r.stderr)
        }
        if expectSuccess { XCTAssertEqual(status, 0, "\(ranks) ranks: \(stderr)\n\(stdout)", file: file, line: line) }
        return (out, stdout, stderr, status)
    }

    private func metrics(_ out: URL) throws -> [[String: Any]] {
        try String(contentsOf: out.appendingPathComponent("metrics.jsonl"), encoding: .utf8).split(separator: "\n")
            .map { try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] }
    }

    private func tensors(_ out: URL) throws -> [String: [Float]] {
        let f = try SafetensorsFile(path: out.appendingPathComponent("trained.safetensors").path)
        var result: [String: [Float]] = [:]
        for (name, e) in f.entries {
            var v = [Float](repeating: 0, count: e.count)
            v.withUnsafeMutableBufferPointer { f.readFloats(e, count: e.count, into: $0.baseAddress!) }
            result[name] = v
        }
        return result
    }

    private func assertEquivalent(_ mode: [String], tag: String, ranks: [Int]) throws -> [String: [Float]] {
        let single = try train(ranks: 1, mode, tag: tag)
        let baseLoss = try metrics(single.out), baseTensors = try tensors(single.out)
        XCTAssertEqual(baseLoss.count, 10)
        for line in baseLoss {
            for key in ["step", "loss", "lr", "grad_norm", "tokens_per_s", "comm_bytes", "dispatch_rows_sent"] {
                XCTAssertNotNil(line[key], "metrics line has \(key)")
            }
        }
        XCTAssertNotNil(baseLoss[4]["val_loss"], "validation every 5 steps")
        for r in ranks {
            let run = try train(ranks: r, mode, tag: tag)
            let m = try metrics(run.out)
            XCTAssertEqual(m.count, 10, "\(r) ranks")
            for (a, b) in zip(baseLoss, m) {
                let la = a["loss"] as! Double, lb = b["loss"] as! Double
                XCTAssertLessThanOrEqual(abs(la - lb) / la, 1e-5, "\(tag), \(r) ranks, step \(a["step"]!): loss \(lb) vs \(la)")
            }
            let t = try tensors(run.out)
            XCTAssertEqual(Set(t.keys), Set(baseTensors.keys), "\(r) ranks: same trained tensors")
            var worst = 0.0
            for (name, base) in baseTensors {
                let other = try XCTUnwrap(t[name])
                let scale = Double(base.reduce(0) { max($0, abs($1)) })
                let diff = Double(zip(base, other).reduce(0) { max($0, abs($1.0 - $1.1)) })
                worst = max(worst, diff / scale)
                XCTAssertLessThanOrEqual(diff, 1e-5 * scale, "\(tag), \(r) ranks: \(name)")
            }
            let rows = (m.last!["dispatch_rows_sent"] as! Double), pairs = (m.last!["dispatch_token_expert_pairs"] as! Double)
            print("\(tag): \(r) ranks: max loss rel diff \(zip(baseLoss, m).map { abs(($0["loss"] as! Double) - ($1["loss"] as! Double)) / ($0["loss"] as! Double) }.max()!), worst tensor diff \(worst) of max; dispatch rows \(rows) for \(pairs) (token, expert) pairs")
            // With fewer ranks than experts per token (K = 4), some of a token's experts always share a rank.
            if r < 4 { XCTAssertLessThan(rows, pairs, "a token goes once to each rank, not once per expert") }
            for (a, b) in zip(baseLoss, m) where a["val_loss"] != nil {
                let va = a["val_loss"] as! Double, vb = try XCTUnwrap(b["val_loss"] as? Double, "\(r) ranks: val_loss at step \(a["step"]!)")
                XCTAssertLessThanOrEqual(abs(va - vb) / va, 1e-5, "\(tag), \(r) ranks: val_loss")
            }
        }
        return baseTensors
    }

    func testESFTTrainingIsTheSameOnOneToFourRanks() throws {
        let trained = try assertEquivalent(["--experts", path("experts.json")], tag: "esft", ranks: [2, 3, 4])
        // Exactly the selected experts trained; experts owned by different ranks (0 → rank 0, 15 → rank 3) both moved.
        let expected = Set([(1, 0), (1, 5), (1, 13), (2, 7), (2, 15)].flatMap { l, e in
            ["gate_proj", "up_proj", "down_proj"].map { "model.layers.\(l).mlp.experts.\(e).\($0).weight" }
        })
        XCTAssertEqual(Set(trained.keys), expected)
        let original = try ModelDirectory(url: Self.dir.appendingPathComponent("model")).loadParameters()
        for name in ["model.layers.1.mlp.experts.0.up_proj.weight", "model.layers.2.mlp.experts.15.up_proj.weight"] {
            let before = Array(UnsafeBufferPointer(start: original[name]!.value, count: original[name]!.count))
            XCTAssertNotEqual(trained[name]!, before, "\(name) received gradients and changed")
        }
    }

    func testFullTrainingIsTheSameOnOneToThreeRanks() throws {
        let trained = try assertEquivalent(["--full"], tag: "full", ranks: [2, 3])
        XCTAssertNotNil(trained["model.embed_tokens.weight"])
        XCTAssertNotNil(trained["model.layers.2.mlp.experts.9.down_proj.weight"])
    }

    /// A Hugging Face directory works under mpirun too (every rank maps every expert, but trains only its
    /// own): the trained tensors equal those from the esft model directory.
    func testHuggingFaceDirectoryUnderMPI() throws {
        let hf = Self.dir.appendingPathComponent("model-hf")
        if !FileManager.default.fileExists(atPath: hf.path) {
            XCTAssertEqual(try Executables.esft(["export", path("model"), hf.path]).status, 0)
        }
        let fromDirectory = try train(ranks: 2, ["--experts", path("experts.json")], tag: "dir", extra: ["--steps", "3"])
        let fromHF = try train(ranks: 2, ["--experts", path("experts.json")], tag: "hf", extra: ["--steps", "3", "--model", hf.path])
        let a = try tensors(fromDirectory.out), b = try tensors(fromHF.out)
        XCTAssertEqual(Set(a.keys), Set(b.keys))
        XCTAssertEqual(a.count, 15, "exactly the 5 selected experts × 3 tensors, each once")
        for (name, v) in a { XCTAssertEqual(v, b[name], name) }
    }

    /// The model directory is mapped read-only: training never writes it (frozen experts never change).
    func testTrainingLeavesTheModelFilesUntouched() throws {
        let files = try FileManager.default.contentsOfDirectory(atPath: path("model")).sorted()
        let before = try files.map { try Data(contentsOf: Self.dir.appendingPathComponent("model").appendingPathComponent($0)) }
        let run = try train(ranks: 2, ["--experts", path("experts.json")], tag: "untouched")
        // export --adapter takes the expert config the run recorded; a different one, or another model, is refused.
        let adapter = Self.dir.appendingPathComponent("adapter")
        try? FileManager.default.removeItem(at: adapter)
        let trained = run.out.appendingPathComponent("trained.safetensors").path
        let ok = try Executables.esft(["export", path("model"), adapter.path, "--trained", trained, "--adapter"])
        XCTAssertEqual(ok.status, 0, ok.stderr)
        XCTAssertEqual(try SafetensorsFile(path: adapter.appendingPathComponent("model.safetensors").path).entries.count, 15)
        let other = Self.dir.appendingPathComponent("other-experts.json")
        try Data(#"{"experts": {"1": [1], "2": [2]}, "shared_experts": false, "non_expert_modules": false}"#.utf8).write(to: other)
        let mismatch = try Executables.esft(["export", path("model"), path("adapter2"), "--trained", trained, "--adapter", "--experts", other.path])
        XCTAssertNotEqual(mismatch.status, 0)
        XCTAssert(mismatch.stderr.contains("differs from the expert config"), mismatch.stderr)
        var cfg = try JSONSerialization.jsonObject(with: Data(contentsOf: Self.configsDir.appendingPathComponent("tiny.json"))) as! [String: Any]
        cfg["num_hidden_layers"] = 4
        let cfgURL = Self.dir.appendingPathComponent("four-layers.json")
        try JSONSerialization.data(withJSONObject: cfg).write(to: cfgURL)
        XCTAssertEqual(try Executables.esft(["init", cfgURL.path, path("four-layers")]).status, 0)
        let wrongModel = try Executables.esft(["export", path("four-layers"), path("hf-wrong"), "--trained", trained])
        XCTAssertNotEqual(wrongModel.status, 0)
        XCTAssert(wrongModel.stderr.contains("trained for a different model"), wrongModel.stderr)
        let after = try files.map { try Data(contentsOf: Self.dir.appendingPathComponent("model").appendingPathComponent($0)) }
        XCTAssertEqual(before, after)
    }

    func testBadInputFailsBeforeAnyWork() throws {
        func expectFailure(ranks: Int, _ mode: [String], extra: [String] = [], mentions: [String], file: StaticString = #filePath, line: UInt = #line) throws {
            let r = try train(ranks: ranks, mode, tag: "bad", extra: extra, expectSuccess: false, file: file, line: line)
            XCTAssertNotEqual(r.status, 0, "should fail", file: file, line: line)
            for m in mentions { XCTAssert(r.stderr.contains(m), "stderr '\(r.stderr)' should mention '\(m)'", file: file, line: line) }
            XCTAssertFalse(FileManager.default.fileExists(atPath: r.out.appendingPathComponent("trained.safetensors").path), file: file, line: line)
        }
        let badLayer = Self.dir.appendingPathComponent("bad-layer.json"), badExpert = Self.dir.appendingPathComponent("bad-expert.json")
        try Data(#"{"experts": {"0": [1], "1": [0], "2": [0]}, "shared_experts": false, "non_expert_modules": false}"#.utf8).write(to: badLayer)
        try Data(#"{"experts": {"1": [0, 99], "2": [0]}, "shared_experts": false, "non_expert_modules": false}"#.utf8).write(to: badExpert)
        try expectFailure(ranks: 1, ["--experts", badLayer.path], mentions: ["bad-layer.json", "0"])
        try expectFailure(ranks: 1, ["--experts", badExpert.path], mentions: ["bad-expert.json", "99"])
        try expectFailure(ranks: 3, ["--full"], extra: ["--batch-rows", "2"], mentions: ["every one of the 3 ranks"])
        try expectFailure(ranks: 1, ["--full"], extra: ["--batch-rows", "5", "--accumulation", "2"], mentions: ["multiple of --accumulation"])
        // A dataset from another vocabulary.
        let other = Self.dir.appendingPathComponent("vocab300.h5")
        try TokenDatasets.writeRandom(to: other, rows: 10, seqLen: 48, tokenRange: 32..<127, seed: 4, vocabSize: 300)
        let r = try Executables.esft(["train", "--model", path("model"), "--data", other.path, "--out", path("bad-vocab"), "--full"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssert(r.stderr.contains("vocabulary") && r.stderr.contains("259"), r.stderr)
        // More ranks than experts: a two-expert model on three ranks.
        var cfg = try JSONSerialization.jsonObject(with: Data(contentsOf: Self.configsDir.appendingPathComponent("tiny.json"))) as! [String: Any]
        cfg["n_routed_experts"] = 2; cfg["num_experts_per_tok"] = 2
        let cfgURL = Self.dir.appendingPathComponent("two.json")
        try JSONSerialization.data(withJSONObject: cfg).write(to: cfgURL)
        XCTAssertEqual(try Executables.esft(["init", cfgURL.path, path("two-experts")]).status, 0)
        if MPIRun.unavailableReason == nil {
            let m = try MPIRun.run(ranks: 3, arguments: ["train", "--model", path("two-experts"), "--data", path("data.h5"),
                                                         "--out", path("bad-ranks"), "--full", "--batch-rows", "6"], timeout: 300)
            XCTAssertNotEqual(m.status, 0)
            XCTAssert(m.stderr.contains("3 ranks but only 2 routed experts"), m.stderr)
        }
        // Rows longer than the model's positions.
        let long = Self.dir.appendingPathComponent("long.h5")
        try TokenDatasets.writeRandom(to: long, rows: 4, seqLen: 2048, tokenRange: 32..<127, seed: 5)
        let l = try Executables.esft(["train", "--model", path("model"), "--data", long.path, "--out", path("bad-long"), "--full"])
        XCTAssertNotEqual(l.status, 0)
        XCTAssert(l.stderr.contains("do not fit the model's max_position_embeddings 1024"), l.stderr)
        // A training config file: known keys apply, an unknown key is an error naming the file and the key.
        let good = Self.configsDir.appendingPathComponent("train-esft.json")
        let configured = Self.dir.appendingPathComponent("configured")
        let g = try Executables.esft(["train", "--model", path("model"), "--data", path("data.h5"), "--out", configured.path, "--full",
                                      "--config", good.path, "--steps", "2", "--batch-rows", "2", "--accumulation", "1", "--threads", "1"])
        XCTAssertEqual(g.status, 0, g.stderr)
        let lines = try metrics(configured)
        XCTAssertEqual(lines.count, 2, "--steps overrides the file's 500")
        XCTAssertEqual(lines.first?["lr"] as? Double, 1e-5, "lr from configs/train-esft.json")
        let badConfig = Self.dir.appendingPathComponent("train-bad.json")
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

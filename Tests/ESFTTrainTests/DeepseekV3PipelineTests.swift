import ESFTKernels
import ESFTModel
import ESFTStore
import ESFTTestSupport
import Foundation
import XCTest

/// DeepSeek-V3 through every command a user runs, starting from an FP8 block-scaled checkpoint
/// (Tests/Fixtures/v3fp8): import, score (1 and 2 ranks, with routing logs read back by --from-logs), select, ESFT
/// on 1 and 2 ranks, export to Hugging Face safetensors and import again.
final class DeepseekV3PipelineTests: XCTestCase {
    private var dir: URL!
    override func setUpWithError() throws { dir = try Fixtures.tempDirectory("v3-pipeline") }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    private func esft(_ args: [String], ranks: Int = 1) throws {
        if ranks == 1 {
            let r = try Executables.esft(args)
            XCTAssertEqual(r.status, 0, "\(args.prefix(2)): \(r.stderr)")
        } else {
            if let why = MPIRun.unavailableReason { throw XCTSkip(why) }
            let r = try MPIRun.run(ranks: ranks, arguments: args, timeout: 600)
            XCTAssertFalse(r.timedOut, "\(args.prefix(2)) hung")
            XCTAssertEqual(r.status, 0, "\(args.prefix(2)): \(r.output)")
        }
    }

    private func scores(_ url: URL) throws -> [String: [String: [String: Double]]] {
        let json = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
        var out: [String: [String: [String: Double]]] = [:]
        for key in ["gate_scores", "token_scores"] { out[key] = try XCTUnwrap(json[key] as? [String: [String: Double]]) }
        return out
    }

    func testFP8CheckpointThroughEveryCommand() throws {
        let name = try XCTUnwrap(try Fixtures.names(in: Fixtures.v3fp8).first)
        let fixture = Fixtures.v3fp8.appendingPathComponent(name)
        let model = dir.appendingPathComponent("model"), data = dir.appendingPathComponent("data.h5")
        try esft(["import", fixture.path, model.path, "--expert-shards", "2"])
        let config = try ModelConfig.load(contentsOf: model.appendingPathComponent("config.json"))
        try TokenDatasets.writeRandom(to: data, rows: 24, seqLen: 24, tokenRange: 0..<90, seed: 3, vocabSize: config.vocabSize)

        // Score: the same on 1 and 2 ranks; the routing logs read back to the same scores.
        var files: [URL] = []
        for ranks in [1, 2] {
            let out = dir.appendingPathComponent("scores-\(ranks).json"), logs = dir.appendingPathComponent("logs-\(ranks)")
            try esft(["score", "--model", model.path, "--data", data.path, "--tokens", "200", "--score-per-sample",
                      "--routing-logs", logs.path, "--out", out.path, "--threads", "1"], ranks: ranks)
            files.append(out)
        }
        let one = try scores(files[0]), two = try scores(files[1])
        XCTAssertEqual(one, two, "1 and 2 ranks give the same scores (batch-ordered sums)")
        let logFiles = try FileManager.default.contentsOfDirectory(atPath: dir.appendingPathComponent("logs-1").path).sorted()
        XCTAssertEqual(logFiles, config.moeLayers.map { "expert_weights_\($0).txt" }.sorted())
        XCTAssertEqual(try Data(contentsOf: dir.appendingPathComponent("logs-1/\(logFiles[0])")),
                       try Data(contentsOf: dir.appendingPathComponent("logs-2/\(logFiles[0])")), "logs in sample order on any rank count")
        let fromLogs = dir.appendingPathComponent("from-logs.json")
        try esft(["score", "--from-logs", dir.appendingPathComponent("logs-1").path, "--top-k", "\(config.expertsPerToken)",
                  "--experts", "\(config.nRoutedExperts)", "--out", fromLogs.path])
        let back = try scores(fromLogs)
        var worst = 0.0, gateSum = 0.0
        for (kind, layers) in one {
            for (layer, experts) in layers {
                for (expert, v) in experts {
                    let w = try XCTUnwrap(back[kind]?[layer]?[expert])
                    // Logged with 9 decimals: each g is off by ≤ 5e-10, and a score is a mean of them.
                    XCTAssertEqual(w, v, accuracy: 1e-9, "\(kind) \(layer) \(expert)")
                    worst = max(worst, abs(w - v))
                    if kind == "gate_scores" && layer == layers.keys.sorted().first { gateSum += v }
                }
            }
        }
        // The sigmoid router's gate scores are renormalised weights: a layer's scores sum to 1 (norm_topk_prob).
        if config.router.normalize { XCTAssertEqual(gateSum, 1, accuracy: 1e-6, "gate scores of a layer sum to 1") }

        // Select and train: 1 rank and 2 ranks, the same losses.
        let experts = dir.appendingPathComponent("experts.json")
        try esft(["select", "--scores", files[0].path, "--method", "gate", "--threshold", "0.3", "--model", model.path, "--out", experts.path])
        var losses: [[Double]] = []
        for ranks in [1, 2] {
            let out = dir.appendingPathComponent("train-\(ranks)")
            try esft(["train", "--model", model.path, "--data", data.path, "--experts", experts.path, "--out", out.path,
                      "--steps", "4", "--batch-rows", "4", "--lr", "1e-3", "--aux-alpha", "0", "--threads", "1"], ranks: ranks)
            losses.append(try String(contentsOf: out.appendingPathComponent("metrics.jsonl"), encoding: .utf8).split(separator: "\n")
                .compactMap { (try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])?["loss"] as? Double })
        }
        XCTAssertEqual(losses[0].count, 4)
        XCTAssertEqual(losses[0].count, losses[1].count)
        // As FamilyTrainingTests: the ranks' sums differ only in order, ≤ 1e-6 relative.
        for (a, b) in zip(losses[0], losses[1]) { XCTAssertLessThanOrEqual(abs(a - b) / a, 1e-6, "loss \(b) vs \(a)") }

        // Export the trained model, import it again: the same tensors, and the trained ones moved.
        let hf = dir.appendingPathComponent("hf"), again = dir.appendingPathComponent("again")
        let trained = dir.appendingPathComponent("train-1/trained.safetensors")
        try esft(["export", model.path, hf.path, "--trained", trained.path])
        XCTAssertFalse(String(decoding: try Data(contentsOf: hf.appendingPathComponent("config.json")), as: UTF8.self).contains("quantization_config"))
        try esft(["import", hf.path, again.path])
        let a = try ModelDirectory(url: model), b = try ModelDirectory(url: again)
        XCTAssertEqual(b.dtype, .bf16)
        let trainedNames = Set(try readSafetensorsFloats(trained).keys)
        var changed = 0
        for (x, y) in zip(try a.tensorInfos(), try b.tensorInfos()) {
            XCTAssertEqual(x.name, y.name); XCTAssertEqual(x.dtype, y.dtype, x.name)
            let bits = { (m: ModelDirectory, i: ModelDirectory.TensorInfo) in
                try m.withTensor(i) { w -> [UInt32] in
                    switch w {
                    case .f32(let p): return (0..<i.spec.count).map { p[$0].bitPattern }
                    case .bf16(let p): return (0..<i.spec.count).map { UInt32(p[$0]) }
                    }
                }
            }
            let same = try bits(a, x) == bits(b, y)
            if trainedNames.contains(x.name) { if !same { changed += 1 } } else { XCTAssert(same, "\(x.name) unchanged by export/import") }
        }
        XCTAssertGreaterThan(changed, 0, "trained tensors are in the export")
        print("\(name): scores equal on 1/2 ranks, from logs within \(worst); losses \(losses[0]); \(changed) trained tensors exported")
    }
}

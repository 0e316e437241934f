import ESFTData
import ESFTTestSupport
import Foundation
import XCTest

/// Class 3 of issue 15: nothing half-written after a failure. `train` validates the model, the data, the
/// expert config and its options before it creates --out, so each failure below leaves no run folder (and
/// label errors are found when the dataset opens, not mid-run); init, data prepare and select leave neither
/// their output nor a temporary.
final class BadInputPartialTests: BadInputTestCase {
    override class var tag: String { "partial" }

    private func train(_ extra: [String], data: String? = nil, model: String? = nil) -> [String] {
        ["train", "--model", model ?? path("model"), "--data", data ?? path("data.h5"), "--out", path("run"), "--steps", "2",
         "--batch-rows", "2", "--threads", "1"] + extra
    }

    /// A dataset like data.h5 with one label changed.
    private func dataset(_ name: String, label: Int32, vocab: Int = 259, seqLen: Int = 16) throws -> String {
        let d = try TokenDataset(path: path("data.h5"))
        var labels = (try d.allLabels()), ids = (try d.allInputIds())
        labels[labels.count - 1] = label
        var meta = d.metadata
        meta.vocabSize = vocab
        if seqLen != d.seqLen {      // rows cut to seqLen tokens
            ids = stride(from: 0, to: ids.count, by: d.seqLen).flatMap { ids[$0..<($0 + seqLen)] }
            labels = stride(from: 0, to: labels.count, by: d.seqLen).flatMap { labels[$0..<($0 + seqLen)] }
            meta.seqLen = seqLen
        }
        let samples = d.samples.filter { $0.start + $0.length <= seqLen }
        try TokenDataset.write(to: dir.appendingPathComponent(name), metadata: meta, inputIds: ids, labels: labels, split: d.split, samples: samples)
        return path(name)
    }

    func testTrainCreatesNoRunFolderWhenAnInputIsBad() throws {
        let badLabel = try dataset("bad-label.h5", label: 4000)
        let otherVocab = try dataset("vocab.h5", label: -100, vocab: 300)
        let eps = try modelDirectory("model-eps", config: try config("eps.json", ["rms_norm_eps": -1e-6]))
        let shortContext = try modelDirectory("model-ctx", config: try config("ctx.json", ["max_position_embeddings": 8]))
        try Data(#"{"experts": {"1": [99], "2": []}, "shared_experts": false, "non_expert_modules": false}"#.utf8).write(to: dir.appendingPathComponent("bad-experts.json"))
        try Data(#"{"steps": 0}"#.utf8).write(to: dir.appendingPathComponent("train.json"))
        try refuse(train(["--full"], data: badLabel), mentions: [badLabel, "labels["])
        try refuse(train(["--full"], data: otherVocab), mentions: [otherVocab, "vocab_size"])
        try refuse(train(["--full"], model: eps), mentions: ["rms_norm_eps"])
        try refuse(train(["--full"], model: shortContext), mentions: ["max_position_embeddings"])
        try refuse(train(["--experts", path("bad-experts.json")]), mentions: [path("bad-experts.json"), "99"])
        try refuse(train(["--experts", path("missing.json")]), mentions: [path("missing.json")])
        try refuse(train(["--full", "--config", path("train.json")]), mentions: [path("train.json"), "steps"])
        try refuse(train(["--full", "--accumulation", "3"]), mentions: ["--accumulation"])
        try refuse(train(["--full"], model: path("no-such-model")), mentions: [path("no-such-model")])
        try refuse(train(["--full", "--keep-best"]), mentions: ["--keep-best"])
    }

    func testInitDataPrepareAndSelectLeaveNothingAfterAFailure() throws {
        let noExperts = try config("noexp.json", ["n_routed_experts": 0])
        try refuse(["init", noExperts, path("out")], mentions: [noExperts, "num_experts_per_tok"])
        try refuse(["init", Self.tinyConfig.path, path("out"), "--expert-shards", "99"], mentions: ["--expert-shards"])
        try Data("{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}\n{not json\n".utf8).write(to: dir.appendingPathComponent("bad.jsonl"))
        try refuse(["data", "prepare", "--tokenizer", "bytes", "--input", path("bad.jsonl"), "--seq-len", "16", "--out", path("d.h5")],
                   mentions: [path("bad.jsonl")])
        try refuse(["select", "--scores", path("scores.json"), "--method", "token", "--top-k", "99", "--out", path("sel.json")],
                   mentions: ["--top-k"])
    }
}

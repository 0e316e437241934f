import ESFTData
import ESFTHDF5
import ESFTTestSupport
import Foundation
import XCTest

/// Class 4 of issue 15: values of the right type that make no sense. Configs (experts per token without
/// experts, rms_norm_eps ≤ 0 or too small for a Float), token datasets (labels outside the vocabulary other
/// than -100, split values other than 0/1, fractional ids stored as floats), negative relevance scores and
/// unknown ids given to `tokenize --decode` are refused, naming the file, the field and the value.
final class BadInputValuesTests: BadInputTestCase {
    override class var tag: String { "values" }

    func testConfigValuesThatMakeNoModel() throws {
        let cases: [([String: Any?], String, String)] = [
            (["n_routed_experts": 0], "num_experts_per_tok", "n_routed_experts is 0"),
            (["rms_norm_eps": 0], "rms_norm_eps", "0"),
            (["rms_norm_eps": -1e-6], "rms_norm_eps", "-1e-06"),
            (["rms_norm_eps": 1e-50], "rms_norm_eps", "1e-50"),           // 0 as a Float
            (["routed_scaling_factor": 1e300], "routed_scaling_factor", "1e+300"),  // inf as a Float
            (["rope_theta": -5], "rope_theta", "-5"),
            (["initializer_range": -0.02], "initializer_range", "-0.02"),
            (["n_routed_experts": 0, "num_experts_per_tok": 0, "n_shared_experts": 2], "n_shared_experts", "2"),
        ]
        for (i, (changes, field, value)) in cases.enumerated() {
            let c = try config("values-\(i).json", changes)
            try refuse(["init", c, path("out-\(i)")], mentions: [c, field + ": ", value])
            try refuse(["bench", "--config", c, "--steps", "1"], mentions: [c, field])
        }
    }

    /// A copy of data.h5 with one dataset replaced by `values` (as int32, or as float32 when `float`).
    private func dataset(_ name: String, replacing dataset: String, float: Bool = false, _ edit: (inout [Int32]) -> Void) throws -> String {
        let d = try TokenDataset(path: path("data.h5"))
        let out = dir.appendingPathComponent(name)
        var values: [Int32] = dataset == "labels" ? (try d.allLabels()) : (try d.allInputIds())
        var split = d.split
        if dataset == "split" { var s = split.map(Int32.init); edit(&s); split = s.map { UInt8($0) } } else { edit(&values) }
        try TokenDataset.write(to: out, metadata: d.metadata, inputIds: dataset == "input_ids" ? values : (try d.allInputIds()),
                               labels: dataset == "labels" ? values : (try d.allLabels()), split: split, samples: d.samples)
        guard float else { return out.path }
        // Rewrite input_ids as float32 with one fractional id: what a careless numpy export produces.
        let f = try H5File.create(out.path + ".tmp", alignment: 64)
        let src = try H5File.openReadOnly(out.path)
        for key in ["esft_format"] { try f.attributes.set(key, src.attributes.string(key)!) }
        for key in ["esft_format_version", "seq_len", "vocab_size", "pad_id", "bos_id", "eos_id", "seed"] { try f.attributes.set(key, src.attributes.int(key)!) }
        var floats = (try d.allInputIds()).map(Float.init)
        floats[5] += 0.5
        try floats.withUnsafeBytes { try f.createDataset("input_ids", element: .float32, shape: [d.rows, d.seqLen]).write($0.baseAddress!, element: .float32) }
        try (try d.allLabels()).withUnsafeBytes { try f.createDataset("labels", element: .int32, shape: [d.rows, d.seqLen]).write($0.baseAddress!, element: .int32) }
        try d.split.withUnsafeBytes { try f.createDataset("split", element: .uint8, shape: [d.rows]).write($0.baseAddress!, element: .uint8) }
        let flat = d.samples.flatMap { [Int64($0.row), Int64($0.start), Int64($0.length), Int64($0.source)] }
        try flat.withUnsafeBytes { try f.createDataset("samples", element: .int64, shape: [d.samples.count, 4]).write($0.baseAddress!, element: .int64) }
        try f.close()
        try FileManager.default.removeItem(at: out)
        try FileManager.default.moveItem(atPath: out.path + ".tmp", toPath: out.path)
        return out.path
    }

    func testDatasetValuesAreCheckedAtOpen() throws {
        let cases: [(String, String, String)] = [
            (try dataset("label-big.h5", replacing: "labels") { $0[20] = 259 }, "labels[1][4]", "259"),
            (try dataset("label-neg.h5", replacing: "labels") { $0[3] = -1 }, "labels[0][3]", "-1"),
            (try dataset("id-neg.h5", replacing: "input_ids") { $0[17] = -7 }, "input_ids[1][1]", "-7"),
            (try dataset("split.h5", replacing: "split") { $0[2] = 2 }, "split[2]", "2"),
            (try dataset("float-ids.h5", replacing: "input_ids", float: true) { _ in }, "input_ids[0][5]", ".5"),
        ]
        for (data, field, value) in cases {
            try refuse(["train", "--model", path("model"), "--data", data, "--full", "--out", path("run"), "--threads", "1"],
                       mentions: [data, field, value])
            try refuse(["score", "--model", path("model"), "--data", data, "--tokens", "16", "--threads", "1", "--out", path("s.json")],
                       mentions: [data, field, value])
        }
    }

    func testNegativeScoresAndUnknownDecodeIds() throws {
        var text = try String(contentsOfFile: path("scores.json"), encoding: .utf8)
        let range = try XCTUnwrap(text.range(of: #""0": [0-9.e-]+"#, options: .regularExpression))
        text.replaceSubrange(range, with: #""0": -0.25"#)
        try Data(text.utf8).write(to: dir.appendingPathComponent("negative.json"))
        try refuse(["select", "--scores", path("negative.json"), "--method", "gate", "--top-k", "2", "--out", path("sel.json")],
                   mentions: [path("negative.json"), "-0.25", "≥ 0"])
        for ids in ["[65, 300]", "[65, -1]", "[65, 2.5]", "[65, true]", "[65, \"66\"]"] {
            let shown = String(ids.dropFirst(5).dropLast())
            try refuse(["tokenize", "--tokenizer", "bytes", "--text", ids, "--decode"], mentions: ["--text", "id [1]", shown])
        }
        // A tokenizer.json whose vocabulary gives a token the id true (JSONSerialization would read it as 1).
        var tokenizer = try JSONSerialization.jsonObject(with: Data(contentsOf: Fixtures.root.appendingPathComponent("tokenizer/tokenizer.json"))) as! [String: Any]
        var model = tokenizer["model"] as! [String: Any], vocab = model["vocab"] as! [String: Any]
        vocab["hello"] = true
        model["vocab"] = vocab; tokenizer["model"] = model
        try JSONSerialization.data(withJSONObject: tokenizer).write(to: dir.appendingPathComponent("tokenizer-bool.json"))
        try refuse(["tokenize", "--tokenizer", path("tokenizer-bool.json"), "--text", "hi"],
                   mentions: [path("tokenizer-bool.json"), #"model.vocab["hello"]"#, "got true"])
    }
}

import ESFTTestSupport
import Foundation
import XCTest

/// Class 6 of issue 15: paths that escape. A sharded checkpoint's model.safetensors.index.json names the
/// file of each tensor; `import` and `forward` refuse a weight_map entry that is absolute, climbs out with
/// `..`, or is a symlink leading out of the model directory, naming the index, the tensor and the path.
final class BadInputPathsTests: BadInputTestCase {
    override class var tag: String { "paths" }

    /// A copy of the sharded fixture whose weight_map sends lm_head.weight to `target`.
    private func checkpoint(_ name: String, target: String) throws -> String {
        let fm = FileManager.default, source = Fixtures.models.appendingPathComponent("sharded_hf_saved")
        let url = dir.appendingPathComponent(name)
        try fm.createDirectory(at: url, withIntermediateDirectories: true)
        for f in ["config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "inputs.json"] {
            try fm.copyItem(at: source.appendingPathComponent(f), to: url.appendingPathComponent(f))
        }
        var index = try JSONSerialization.jsonObject(with: Data(contentsOf: source.appendingPathComponent("model.safetensors.index.json"))) as! [String: Any]
        var map = index["weight_map"] as! [String: String]
        map["lm_head.weight"] = target
        index["weight_map"] = map
        try JSONSerialization.data(withJSONObject: index).write(to: url.appendingPathComponent("model.safetensors.index.json"))
        return url.path
    }

    func testWeightMapPathsOutsideTheModelAreRefused() throws {
        // The shard a hostile index points at, outside the checkpoint (a real safetensors file, so only the path is wrong).
        let outside = dir.appendingPathComponent("outside.safetensors").path
        try FileManager.default.copyItem(atPath: Fixtures.models.appendingPathComponent("sharded_hf_saved/model-00001-of-00002.safetensors").path,
                                         toPath: outside)
        let linked = try checkpoint("linked", target: "evil.safetensors")
        try FileManager.default.createSymbolicLink(atPath: linked + "/evil.safetensors", withDestinationPath: outside)
        let cases: [(String, String)] = [
            (try checkpoint("parent", target: "../outside.safetensors"), "'..'"),
            (try checkpoint("deeper", target: "sub/../../outside.safetensors"), "'..'"),
            (try checkpoint("absolute", target: outside), "absolute"),
            (linked, "outside the model directory"),
        ]
        for (hf, why) in cases {
            let index = hf + "/model.safetensors.index.json"
            try refuse(["import", hf, path("imported-\(UUID().uuidString.prefix(6))")], mentions: [index, "weight_map.lm_head.weight", why])
            try refuse(["forward", "--model", hf, "--tokens", hf + "/inputs.json", "--out", path("f.safetensors")],
                       mentions: [index, "weight_map.lm_head.weight", why])
        }
        // The same checkpoint with its own shard names imports (the check refuses only what escapes).
        let fine = try checkpoint("fine", target: "model-00001-of-00002.safetensors")
        let r = try Executables.esft(["import", fine, path("imported")])
        XCTAssertEqual(r.status, 0, r.stderr)
    }
}

import ESFTKernels
import ESFTModel
import ESFTStore
import ESFTTestSupport
import Foundation
import XCTest

final class SafetensorsTests: XCTestCase {
    private var dir: URL!
    override func setUpWithError() throws { dir = try Fixtures.tempDirectory("st") }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    /// Writes a raw safetensors file from a JSON header and data bytes.
    private func rawFile(_ name: String, header: String, data: [UInt8], declaredLength: UInt64? = nil) -> String {
        var bytes = [UInt8]()
        var len = (declaredLength ?? UInt64(header.utf8.count)).littleEndian
        withUnsafeBytes(of: &len) { bytes += $0 }
        bytes += Array(header.utf8) + data
        let path = dir.appendingPathComponent(name).path
        XCTAssert(FileManager.default.createFile(atPath: path, contents: Data(bytes)))
        return path
    }

    private func assertError(_ path: String, contains needles: [String], file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try SafetensorsFile(path: path), file: file, line: line) { error in
            let message = "\(error)"
            for n in needles { XCTAssert(message.contains(n), "'\(message)' should mention '\(n)'", file: file, line: line) }
        }
    }

    func testRoundTripF32AndBF16() throws {
        let values: [Float] = [1, -2.5, 3.25, 0, 1e-3, 65504, -0.0, 7]
        let url = dir.appendingPathComponent("t.safetensors")
        try values.withUnsafeBufferPointer { v in
            try SafetensorsWriter.write([TensorToWrite(name: "a", shape: [2, 4], data: v.baseAddress!),
                                         TensorToWrite(name: "b", shape: [8], data: v.baseAddress!, dtype: .bf16)],
                                        metadata: ["format": "pt"], to: url)
        }
        let f = try SafetensorsFile(path: url.path)
        XCTAssertEqual(f.metadata["format"], "pt")
        let a = try XCTUnwrap(f.entries["a"]), b = try XCTUnwrap(f.entries["b"])
        XCTAssertEqual(a.shape, [2, 4]); XCTAssertEqual(b.dtype, .bf16)
        let view = try XCTUnwrap(f.f32View(a), "F32 data is mapped without a copy")
        XCTAssertEqual(Array(UnsafeBufferPointer(start: view, count: 8)), values)
        var widened = [Float](repeating: 0, count: 8)
        widened.withUnsafeMutableBufferPointer { f.readFloats(b, count: 8, into: $0.baseAddress!) }
        // 1e-3 = 0x3A83126F rounds down to 0x3A830000; 65504 = 0x477FE000 rounds up to 0x47800000 (65536).
        XCTAssertEqual(widened, [1, -2.5, 3.25, 0, Float(bitPattern: 0x3A83_0000), 65536, -0.0, 7], "bf16 rounds to nearest even")
    }

    func testTruncatedAndCorruptFilesAreClearErrors() throws {
        let ok = #"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#
        assertError(rawFile("empty.safetensors", header: "", data: []), contains: ["empty.safetensors"])
        XCTAssert(FileManager.default.createFile(atPath: dir.appendingPathComponent("short.safetensors").path, contents: Data([1, 2, 3])))
        assertError(dir.appendingPathComponent("short.safetensors").path, contains: ["short.safetensors", "truncated"])
        assertError(rawFile("hdr.safetensors", header: ok, data: [], declaredLength: 1 << 40), contains: ["hdr.safetensors", "truncated"])
        assertError(rawFile("huge.safetensors", header: ok, data: [], declaredLength: UInt64.max), contains: ["huge.safetensors", "truncated"])
        assertError(rawFile("shape.safetensors", header: #"{"w":{"dtype":"F32","shape":[4294967296,4294967296,4],"data_offsets":[0,8]}}"#, data: Array(repeating: 0, count: 8)),
                    contains: ["shape.safetensors", "'w'", "too large"])
        assertError(rawFile("data.safetensors", header: ok, data: [0, 0, 0, 0]), contains: ["data.safetensors", "'w'", "past the end"])
        assertError(rawFile("json.safetensors", header: "{not json", data: []), contains: ["json.safetensors", "JSON"])
        assertError(rawFile("dtype.safetensors", header: #"{"w":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}}"#, data: Array(repeating: 0, count: 8)),
                    contains: ["dtype.safetensors", "'w'", "unsupported dtype I64"])
        assertError(rawFile("overlap.safetensors", header: #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
                            data: Array(repeating: 0, count: 12)), contains: ["overlap.safetensors", "overlap"])
        assertError(rawFile("size.safetensors", header: #"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, data: Array(repeating: 0, count: 8)),
                    contains: ["size.safetensors", "'w'", "expected 12"])
        assertError(rawFile("order.safetensors", header: #"{"w":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}}"#, data: Array(repeating: 0, count: 8)),
                    contains: ["order.safetensors", "not increasing"])
    }

    /// Recent transformers may store routed experts fused in 3-D; loading that layout must give the same model.
    func testFusedExpertLayoutLoadsTheSameModel() throws {
        let name = "lite_yarn_oldcfg"
        let f = try ModelFixture(name)
        let cfg = f.checkpoint.config
        let e = cfg.nRoutedExperts, i = cfg.moeIntermediateSize, d = cfg.hiddenSize
        var tensors: [TensorToWrite] = []
        var keep: [[Float]] = []
        for p in f.parameters.ordered where !p.name.contains(".mlp.experts.") {
            tensors.append(TensorToWrite(name: p.name, shape: p.shape, data: p.value))
        }
        for l in cfg.moeLayers {
            var gateUp = [Float](), down = [Float]()
            for ex in 0..<e {
                let pre = "model.layers.\(l).mlp.experts.\(ex)."
                for kind in ["gate_proj", "up_proj"] {
                    let p = try XCTUnwrap(f.parameters[pre + kind + ".weight"])
                    gateUp += UnsafeBufferPointer(start: p.value, count: p.count)
                }
                let p = try XCTUnwrap(f.parameters[pre + "down_proj.weight"])
                down += UnsafeBufferPointer(start: p.value, count: p.count)
            }
            keep += [gateUp, down]
        }
        for (n, l) in cfg.moeLayers.enumerated() {
            keep[2 * n].withUnsafeBufferPointer { tensors.append(TensorToWrite(name: "model.layers.\(l).mlp.experts.gate_up_proj", shape: [e, 2 * i, d], data: $0.baseAddress!)) }
            keep[2 * n + 1].withUnsafeBufferPointer { tensors.append(TensorToWrite(name: "model.layers.\(l).mlp.experts.down_proj", shape: [e, d, i], data: $0.baseAddress!)) }
        }
        let fused = dir.appendingPathComponent("fused")
        try FileManager.default.createDirectory(at: fused, withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: f.directory.appendingPathComponent("config.json"), to: fused.appendingPathComponent("config.json"))
        try SafetensorsWriter.write(tensors, to: fused.appendingPathComponent("model.safetensors"))

        let checkpoint = try HFCheckpoint(directory: fused)
        let (params, unused) = try checkpoint.loadParameters()
        XCTAssertEqual(unused, [])
        let model = try MoETransformer(config: checkpoint.config, parameters: params)
        _ = try model.forward(f.batch, training: false)
        _ = try f.model.forward(f.batch, training: false)
        let n = f.batch.batch * f.batch.seqLen * cfg.vocabSize
        XCTAssertEqual(Array(model.logits(count: n)), Array(f.model.logits(count: n)), "fused and per-expert layouts give identical logits")
    }

    func testMissingTensorAndWrongShapeNameTheTensor() throws {
        let f = try ModelFixture("lite_yarn_oldcfg")
        let victim = "model.layers.1.mlp.experts.3.down_proj.weight"
        for mode in ["missing", "shape"] {
            let out = dir.appendingPathComponent(mode)
            try FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)
            try FileManager.default.copyItem(at: f.directory.appendingPathComponent("config.json"), to: out.appendingPathComponent("config.json"))
            let tensors = f.parameters.ordered.compactMap { p -> TensorToWrite? in
                if p.name == victim { return mode == "missing" ? nil : TensorToWrite(name: p.name, shape: [p.shape[1], p.shape[0]], data: p.value) }
                return TensorToWrite(name: p.name, shape: p.shape, data: p.value)
            }
            try SafetensorsWriter.write(tensors, to: out.appendingPathComponent("model.safetensors"))
            XCTAssertThrowsError(try HFCheckpoint(directory: out).loadParameters()) { error in
                XCTAssert("\(error)".contains(victim), "\(error)")
                XCTAssert("\(error)".contains(mode == "missing" ? "missing tensor" : "has shape"), "\(error)")
            }
        }
    }

    func testShardIndexMustAgreeWithShards() throws {
        let src = Fixtures.models.appendingPathComponent("sharded_hf_saved")
        let out = dir.appendingPathComponent("badindex")
        try FileManager.default.copyItem(at: src, to: out)
        let indexURL = out.appendingPathComponent("model.safetensors.index.json")
        var index = try JSONSerialization.jsonObject(with: Data(contentsOf: indexURL)) as! [String: Any]
        var map = index["weight_map"] as! [String: String]
        let files = Set(map.values).sorted()
        map["model.norm.weight"] = files.first { $0 != map["model.norm.weight"] }
        index["weight_map"] = map
        try JSONSerialization.data(withJSONObject: index).write(to: indexURL)
        XCTAssertThrowsError(try HFCheckpoint(directory: out)) { XCTAssert("\($0)".contains("model.norm.weight"), "\($0)") }
    }
}

import ESFTKernels
import ESFTModel
@testable import ESFTStore
import ESFTTestSupport
import Foundation
import XCTest

/// FP8 block-scaled checkpoints (DeepSeek-V3/R1, Kimi-K2's format): `esft import` dequantizes them bit for bit as
/// torch does (Tests/Fixtures/v3fp8, scripts/gen_fp8_fixtures.py: `q.to(float32) * scale_inv` per block, then
/// `.to(bfloat16)`), refuses bad scales naming the tensor, and keeps DeepSeek-V3's router in float32.
final class FP8ImportTests: XCTestCase {
    var work: URL!
    override func setUpWithError() throws { work = try Fixtures.tempDirectory("esft-fp8") }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: work) }

    func fixtures() throws -> [URL] {
        let names = try Fixtures.names(in: Fixtures.v3fp8)
        XCTAssertFalse(names.isEmpty, "Tests/Fixtures/v3fp8 holds the FP8 fixtures")
        return names.map { Fixtures.v3fp8.appendingPathComponent($0) }
    }

    /// Codes with known values (OCP FP8: E4M3 max 448, no infinities; E5M2 max 57344, IEEE specials).
    func testCodeTables() {
        XCTAssertEqual(FP8.e4m3[0x00], 0); XCTAssertEqual(FP8.e4m3[0x80].sign, .minus)
        XCTAssertEqual(FP8.e4m3[0x38], 1)                      // exponent 7 = bias
        XCTAssertEqual(FP8.e4m3[0x7E], 448)                    // largest finite
        XCTAssert(FP8.e4m3[0x7F].isNaN && FP8.e4m3[0xFF].isNaN)
        XCTAssertEqual(FP8.e4m3[0x78], 256)                    // exponent 15 is finite in "fn"
        XCTAssertEqual(FP8.e4m3[0x01], 0x1p-9)                 // smallest subnormal
        XCTAssertEqual(FP8.e4m3[0x08], 0x1p-6)                 // smallest normal
        XCTAssertEqual(FP8.e4m3[0xBA], -1.25)
        XCTAssertEqual(FP8.e5m2[0x3C], 1)
        XCTAssertEqual(FP8.e5m2[0x7B], 57344)
        XCTAssertEqual(FP8.e5m2[0x7C], .infinity); XCTAssertEqual(FP8.e5m2[0xFC], -.infinity)
        XCTAssert(FP8.e5m2[0x7D].isNaN)
        XCTAssertEqual(FP8.e5m2[0x01], 0x1p-16)
        // Every finite code is distinct and ordered like its magnitude.
        for table in [FP8.e4m3, FP8.e5m2] {
            let positives = table[0..<0x80].filter(\.isFinite)
            XCTAssertEqual(positives, positives.sorted())
            XCTAssertEqual(Set(positives).count, positives.count)
        }
    }

    /// Import (bf16 by default, and --dtype fp32) against torch's dequantization, every FP8 tensor bit for bit; the
    /// other tensors as stored; the router weight and selection bias stay float32 in the bf16 directory.
    func testImportIsTorchsDequantizationBitForBit() throws {
        for fixture in try fixtures() {
            let checkpoint = try HFCheckpoint(directory: fixture)
            let q = try XCTUnwrap(checkpoint.quantization, fixture.lastPathComponent)
            let reference = try SafetensorsFile(path: fixture.appendingPathComponent("dequant.safetensors").path)
            var fp8 = 0, e5m2 = 0, ragged = 0
            for (dtype, prefix) in [(StoredDType.bf16, "bf16."), (.fp32, "fp32.")] {
                let out = work.appendingPathComponent("\(fixture.lastPathComponent)-\(dtype.rawValue)")
                let (_, chosen) = try ModelImport.run(from: fixture, to: out, dtype: dtype == .bf16 ? nil : .fp32, expertShards: 2)
                XCTAssertEqual(chosen, dtype, "FP8 imports as bf16 by default")
                let model = try ModelDirectory(url: out)
                XCTAssertFalse(String(decoding: try Data(contentsOf: out.appendingPathComponent("config.json")), as: UTF8.self)
                    .contains("quantization_config"), "the imported model is not quantized")
                for info in try model.tensorInfos() {
                    let stored = try checkpoint.source(info.spec)
                    let keepsF32 = checkpoint.config.family.keepsFloat32(info.spec.id)
                    XCTAssertEqual(info.dtype, keepsF32 ? .fp32 : dtype, info.name)
                    let got = try model.withTensor(info) { w -> [UInt32] in
                        switch w {
                        case .f32(let p): return (0..<info.spec.count).map { p[$0].bitPattern }
                        case .bf16(let p): return (0..<info.spec.count).map { UInt32(p[$0]) << 16 }
                        }
                    }
                    let want: [UInt32]
                    if stored.dtype.isFP8 {
                        let e = try XCTUnwrap(reference.entries[prefix + info.name], "\(prefix)\(info.name) in dequant.safetensors")
                        var values = [Float](repeating: 0, count: e.count)
                        values.withUnsafeMutableBufferPointer { reference.readFloats(e, count: e.count, into: $0.baseAddress!) }
                        want = values.map(\.bitPattern)
                        if dtype == .bf16 {
                            fp8 += 1
                            if stored.dtype == .f8e5m2 { e5m2 += 1 }
                            if info.shape[0] % q.blockRows != 0 || info.shape[1] % q.blockCols != 0 { ragged += 1 }
                        }
                    } else {
                        var values = [Float](repeating: 0, count: stored.count)
                        values.withUnsafeMutableBufferPointer { stored.read(into: $0.baseAddress!) }
                        // Stored as is: exact in fp32; in a bf16 directory exact as well, since the checkpoint's
                        // BF16 tensors are bf16 already (and the router's F32 ones stay F32).
                        want = values.map(\.bitPattern)
                    }
                    XCTAssertEqual(got, want, "\(fixture.lastPathComponent) \(dtype.rawValue): \(info.name)")
                }
            }
            XCTAssertGreaterThan(fp8, 0); XCTAssertGreaterThan(e5m2, 0, "E5M2 covered"); XCTAssertGreaterThan(ragged, 0, "ragged blocks covered")
            print("\(fixture.lastPathComponent): \(fp8) FP8 tensors (\(e5m2) E5M2, \(ragged) with ragged edge blocks) equal torch's dequantization in bf16 and fp32")
        }
    }

    /// A copy of the first fixture with `edit` applied to model.safetensors (header and data) and config.json.
    private func brokenCopy(_ tag: String, editTensors: ((inout Data, SafetensorsFile, Int) throws -> Void)? = nil,
                            editConfig: ((inout [String: Any]) -> Void)? = nil) throws -> URL {
        // The fixture with the smallest blocks: its scales have several blocks per row.
        let source = try XCTUnwrap(try fixtures().min { try HFCheckpoint(directory: $0).quantization!.blockCols < HFCheckpoint(directory: $1).quantization!.blockCols })
        let dir = work.appendingPathComponent(tag)
        try FileManager.default.copyItem(at: source, to: dir)
        let weights = dir.appendingPathComponent("model.safetensors")
        if let editTensors {
            var data = try Data(contentsOf: weights)
            let file = try SafetensorsFile(path: weights.path)
            let dataStart = 8 + Int(data.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) })
            try editTensors(&data, file, dataStart)
            try data.write(to: weights)
        }
        if let editConfig {
            let url = dir.appendingPathComponent("config.json")
            var cfg = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
            editConfig(&cfg)
            try JSONSerialization.data(withJSONObject: cfg).write(to: url)
        }
        return dir
    }

    /// The first FP8 weight's name (sorted) and its scale's entry.
    private func firstScale(_ file: SafetensorsFile) throws -> (weight: String, scale: SafetensorsFile.Entry) {
        let weight = try XCTUnwrap(file.entries.values.filter { $0.dtype.isFP8 }.map(\.name).sorted().first)
        return (weight, try XCTUnwrap(file.entries[FP8Quantization.scaleName(of: weight)]))
    }

    private func expectRefused(_ dir: URL, _ needles: [String], _ what: String) throws {
        let out = work.appendingPathComponent("out-\(dir.lastPathComponent)")
        XCTAssertThrowsError(try ModelImport.run(from: dir, to: out, dtype: nil, expertShards: 1), what) { error in
            let text = "\(error)"
            for n in needles { XCTAssert(text.contains(n), "\(what): '\(n)' not in: \(text)") }
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: out.path), "\(what): nothing written")
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: work.path).filter { $0.hasPrefix(".out-") }
        XCTAssertEqual(leftovers, [], "\(what): no temporary left")
    }

    func testBadScalesAreRefusedNamingTheTensor() throws {
        for (tag, value) in [("nan", Float.nan), ("zero", 0), ("negative", -0.5), ("inf", .infinity)] {
            var scaleName = ""
            let dir = try brokenCopy("scale-\(tag)", editTensors: { data, file, start in
                let (weight, scale) = try self.firstScale(file)
                scaleName = FP8Quantization.scaleName(of: weight)
                XCTAssertEqual(scale.dtype, .f32)
                XCTAssertGreaterThan(scale.shape[1], 1, "block [0, 1] exists")
                var bits = value.bitPattern.littleEndian
                data.replaceSubrange((start + scale.begin + 4)..<(start + scale.begin + 8), with: Data(bytes: &bits, count: 4))
            })
            try expectRefused(dir, [scaleName, "block [0, 1]", "finite and positive", "model.safetensors"], "scale \(tag)")
        }
        // The scale renamed away (same length, so the header stays valid): missing.
        var weightName = ""
        let missing = try brokenCopy("scale-missing", editTensors: { data, file, _ in
            let (weight, _) = try self.firstScale(file)
            weightName = weight
            let from = Data("\"\(weight)_scale_inv\"".utf8), to = Data("\"\(weight)_scale_inx\"".utf8)
            let range = try XCTUnwrap(data.range(of: from))
            data.replaceSubrange(range, with: to)
        })
        try expectRefused(missing, [weightName, "_scale_inv' is missing"], "missing scale")
        // A block size the scales do not fit: wrong shape.
        let shape = try brokenCopy("scale-shape", editConfig: { cfg in
            var q = cfg["quantization_config"] as! [String: Any]
            q["weight_block_size"] = [3, 5]
            cfg["quantization_config"] = q
        })
        try expectRefused(shape, ["_scale_inv' has shape", "weight_block_size"], "scale shape")
        // No quantization_config: FP8 tensors cannot be scaled.
        let noConfig = try brokenCopy("no-qconfig", editConfig: { cfg in cfg.removeValue(forKey: "quantization_config") })
        try expectRefused(noConfig, ["F8_E", "no quantization_config"], "no quantization_config")
        // Another quantization method is named as such.
        let awq = try brokenCopy("awq", editConfig: { cfg in cfg["quantization_config"] = ["quant_method": "awq", "bits": 4] })
        try expectRefused(awq, ["config.json", "quantization_config", "'awq'"], "other method")
        let block = try brokenCopy("block", editConfig: { cfg in
            cfg["quantization_config"] = ["quant_method": "fp8", "weight_block_size": [0, 128]]
        })
        try expectRefused(block, ["quantization_config.weight_block_size", "positive"], "block size 0")
    }

    /// transformers' bf16 DeepSeek-V3 keeps the router weight and its selection bias float32; an esft bf16 directory
    /// does too (auto dtype picks bf16 for such a checkpoint), and export writes them back as F32.
    func testBF16V3KeepsTheRouterInFloat32() throws {
        let fixture = Fixtures.v3.appendingPathComponent("v3_qlora_group4_rotatehalf_tied_bf16")
        let checkpoint = try HFCheckpoint(directory: fixture)
        let model = work.appendingPathComponent("v3bf16")
        let (_, chosen) = try ModelImport.run(from: fixture, to: model, dtype: nil, expertShards: 2)
        XCTAssertEqual(chosen, .bf16)
        let dir = try ModelDirectory(url: model)
        var kept = 0
        for info in try dir.tensorInfos() where checkpoint.config.family.keepsFloat32(info.spec.id) {
            XCTAssertEqual(info.dtype, .fp32, info.name)
            let src = try checkpoint.source(info.spec)
            XCTAssertEqual(src.dtype, .f32, info.name)
            var want = [Float](repeating: 0, count: src.count)
            want.withUnsafeMutableBufferPointer { src.read(into: $0.baseAddress!) }
            let got = try dir.withTensor(info) { w -> [Float] in
                guard case .f32(let p) = w else { return [] }
                return Array(UnsafeBufferPointer(start: p, count: info.spec.count))
            }
            XCTAssertEqual(got.map(\.bitPattern), want.map(\.bitPattern), info.name)
            kept += 1
        }
        XCTAssertEqual(kept, 2 * checkpoint.config.moeLayers.count, "router weight and bias of every MoE layer")
        let exported = work.appendingPathComponent("v3bf16-hf")
        try ModelExport.safetensors(model: dir, trained: nil, to: exported, dtype: nil, maxShardBytes: 1 << 30)
        let back = try HFCheckpoint(directory: exported)
        for spec in back.config.parameterSpecs() {
            XCTAssertEqual(try back.source(spec).dtype, checkpoint.config.family.keepsFloat32(spec.id) ? .f32 : .bf16, spec.name)
        }
    }

    /// Multi-token-prediction tensors (layer index num_hidden_layers) are skipped with a note, not reported unused.
    func testMTPLayersAreSkippedWithANote() throws {
        let fixture = Fixtures.v3.appendingPathComponent("v3_nolora_yarn_interleave_greedy")
        let dir = work.appendingPathComponent("mtp")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        for name in ["config.json", "inputs.json"] {
            try FileManager.default.copyItem(at: fixture.appendingPathComponent(name), to: dir.appendingPathComponent(name))
        }
        let original = try SafetensorsFile(path: fixture.appendingPathComponent("model.safetensors").path)
        var buffers: [[Float]] = []
        var tensors: [(String, [Int])] = original.entries.values.sorted { $0.name < $1.name }.map { e in
            var v = [Float](repeating: 0, count: e.count)
            v.withUnsafeMutableBufferPointer { original.readFloats(e, count: e.count, into: $0.baseAddress!) }
            buffers.append(v)
            return (e.name, e.shape)
        }
        let layers = try HFCheckpoint(directory: fixture).config.numLayers
        for (name, shape) in [("enorm.weight", [32]), ("hnorm.weight", [32]), ("eh_proj.weight", [32, 64]), ("shared_head.norm.weight", [32])] {
            tensors.append(("model.layers.\(layers).\(name)", shape))
            buffers.append([Float](repeating: 0.5, count: shape.reduce(1, *)))
        }
        try withExtendedLifetime(buffers) {
            let writes = zip(tensors, buffers).map { t, b in
                TensorToWrite(name: t.0, shape: t.1, data: b.withUnsafeBufferPointer { $0.baseAddress! })
            }
            try SafetensorsWriter.write(writes, to: dir.appendingPathComponent("model.safetensors"))
        }
        let checkpoint = try HFCheckpoint(directory: dir)
        XCTAssertEqual(checkpoint.mtpTensorNames().count, 4)
        XCTAssertEqual(checkpoint.unusedTensorNames(), [])
        var notes: [String] = []
        try ModelImport.run(from: dir, to: work.appendingPathComponent("mtp-model"), dtype: nil, expertShards: 1) { notes.append($0) }
        XCTAssert(notes.contains { $0.contains("skipping 4 tensors of layers past num_hidden_layers \(layers)") && $0.contains("multi-token-prediction") }, "\(notes)")
    }

    /// Kimi-K2's config (model_type kimi_k2, DeepSeek-V3's architecture and fields) reads as deepseek_v3.
    func testKimiK2ConfigIsDeepseekV3() throws {
        let url = Fixtures.root.deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("configs/kimi-k2.json")
        let c = try ModelConfig.load(contentsOf: url)
        XCTAssertEqual(c.family, .deepseekV3)
        XCTAssertEqual(c.nRoutedExperts, 384); XCTAssertEqual(c.expertsPerToken, 8)
        XCTAssertEqual(c.router.scoring, .sigmoid); XCTAssertEqual(c.router.scale, 2.827, accuracy: 1e-6)
        XCTAssertEqual(c.moeLayers.count, 60)
        XCTAssertTrue(ModelFamily.supported.contains("kimi_k2 (as deepseek_v3)"))
    }
}

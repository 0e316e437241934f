import ESFTHDF5
import ESFTKernels
import ESFTModel
import ESFTStore
import ESFTTestSupport
import Foundation
import XCTest

/// import → inspect → forward on the mapped model → export → reload, and what must fail cleanly.
final class ModelDirectoryTests: XCTestCase {
    private var dir: URL!
    override func setUpWithError() throws { dir = try Fixtures.tempDirectory("store") }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    private func bytes(_ file: SafetensorsFile, _ name: String) -> Data {
        let e = file.entries[name]!
        return Data(bytes: file.raw(e), count: e.end - e.begin)
    }

    func testImportForwardExportRoundTripIsBitwise() throws {
        let fixture = ModelFixture.self
        for name in ["lite_yarn_oldcfg", "sharded_hf_saved", "group_bf16_tied"] {
            let f = try fixture.init(name)
            let model = dir.appendingPathComponent("\(name).esft")
            let (count, dtype) = try ModelImport.run(from: f.directory, to: model, dtype: nil, expertShards: 3)
            XCTAssertEqual(count, f.parameters.ordered.count)
            XCTAssertEqual(dtype, name == "group_bf16_tied" ? .bf16 : .fp32, "bf16 checkpoints stay bf16 by default")

            // Forward on the mapped model equals the HF reference.
            let loaded = try LoadedModel.open(model)
            XCTAssert(loaded.parameters.ordered.filter { $0.shape.count > 1 }.allSatisfy { !$0.ownsValue }, "\(name): matrices are mapped views")
            let m = try MoETransformer(config: loaded.config, parameters: loaded.parameters)
            _ = try m.forward(f.batch, training: false)
            let v = loaded.config.vocabSize
            XCTAssertLessThan(relativeToMax(m.logits(count: f.batch.batch * f.batch.seqLen * v), try XCTUnwrap(f.expectedArray("logits"))), 1e-4, name)

            // Export back to safetensors: every tensor's bytes identical to the original checkpoint.
            let out = dir.appendingPathComponent("\(name).hf")
            try ModelExport.safetensors(model: try ModelDirectory(url: model), trained: nil, to: out, dtype: nil, maxShardBytes: 60_000)
            let exported = try HFCheckpoint(directory: out)
            XCTAssertGreaterThan(exported.files.count, 1, "small shard limit gives several shards with an index")
            for spec in f.checkpoint.config.parameterSpecs() {
                let a = try f.checkpoint.source(spec), b = try exported.source(spec)
                XCTAssertEqual(a.dtype, b.dtype, spec.name)
                XCTAssertEqual(Data(bytes: a.file.raw(a.entry) + a.elementOffset * a.dtype.size, count: a.count * a.dtype.size),
                               Data(bytes: b.file.raw(b.entry), count: b.count * b.dtype.size), "\(name): \(spec.name) bitwise")
            }
            XCTAssertEqual(try Data(contentsOf: out.appendingPathComponent("config.json")),
                           try Data(contentsOf: f.directory.appendingPathComponent("config.json")), "config.json kept verbatim")
        }
    }

    func testInitMatchesInMemoryInitAndExportMergesTrainedTensors() throws {
        let config = try ModelConfig.load(contentsOf: Fixtures.root.deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("configs/tiny.json"))
        let configJSON = try Data(contentsOf: Fixtures.root.deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("configs/tiny.json"))
        let model = dir.appendingPathComponent("tiny")
        try ModelInit.run(config: config, configJSON: configJSON, to: model, seed: 11, dtype: .fp32, expertShards: 4)
        let reference = ParameterSet.randomlyInitialized(config, seed: 11)
        let loaded = try ModelDirectory(url: model).loadParameters()
        for p in reference.ordered {
            let q = try XCTUnwrap(loaded[p.name])
            XCTAssertEqual(Array(UnsafeBufferPointer(start: q.value, count: q.count)), Array(UnsafeBufferPointer(start: p.value, count: p.count)), p.name)
        }
        // A trained expert replaces the stored one on export; everything else is unchanged.
        let name = "model.layers.2.mlp.experts.5.up_proj.weight"
        let shape = try XCTUnwrap(reference[name]).shape
        let trainedValues = (0..<shape.reduce(1, *)).map { Float($0) * 0.5 }
        let trainedFile = dir.appendingPathComponent("trained.safetensors")
        try trainedValues.withUnsafeBufferPointer { try SafetensorsWriter.write([TensorToWrite(name: name, shape: shape, data: $0.baseAddress!)], to: trainedFile) }
        let directory = try ModelDirectory(url: model)
        let trained = try TrainedTensors(trainedFile.path, model: directory)
        let merged = dir.appendingPathComponent("merged")
        try ModelExport.modelDirectory(model: directory, trained: trained, to: merged, dtype: nil, expertShards: 2)
        let back = try ModelDirectory(url: merged)
        XCTAssertEqual(back.expertRanges, [0..<8, 8..<16])
        let params = try back.loadParameters()
        XCTAssertEqual(Array(UnsafeBufferPointer(start: params[name]!.value, count: trainedValues.count)), trainedValues)
        let other = "model.layers.2.mlp.experts.4.up_proj.weight"
        XCTAssertEqual(Array(UnsafeBufferPointer(start: params[other]!.value, count: 8)), Array(UnsafeBufferPointer(start: reference[other]!.value, count: 8)))

        // The adapter holds exactly the trained tensors under their HF names, plus expert_cfg.json.
        let adapter = dir.appendingPathComponent("adapter")
        let cfg = Data(#"{"experts": {"1": [], "2": [5]}, "shared_experts": false, "non_expert_modules": false}"#.utf8)
        try ModelExport.adapter(trained: trained, expertConfigJSON: cfg, to: adapter)
        XCTAssertEqual(try Data(contentsOf: adapter.appendingPathComponent("expert_cfg.json")), cfg)
        XCTAssertEqual(Array(try SafetensorsFile(path: adapter.appendingPathComponent("model.safetensors").path).entries.keys), [name])
    }

    /// A process that owns a range of experts maps only those: the others are not in its parameter set.
    func testLoadingAnExpertRangeMapsOnlyThoseExperts() throws {
        let f = try ModelFixture("lite_yarn_oldcfg")
        let model = dir.appendingPathComponent("m")
        try ModelImport.run(from: f.directory, to: model, dtype: nil, expertShards: 2)
        let params = try ModelDirectory(url: model).loadParameters(experts: 2..<5)
        let experts = Set(params.ordered.compactMap { $0.id.routedExpert?.expert })
        XCTAssertEqual(experts, [2, 3, 4])
        XCTAssertNotNil(params["model.layers.0.self_attn.q_proj.weight"], "non-expert tensors are always there")
        XCTAssertNotNil(params["model.layers.1.mlp.shared_experts.up_proj.weight"])
        // A placement's share may differ per layer: exactly the (layer, expert) pairs it accepts are mapped.
        let keep: (Int, Int) -> Bool = { l, e in (l + e) % 3 == 0 }
        let shared = try ModelDirectory(url: model).loadParameters(keepingExpert: keep)
        let pairs = shared.ordered.compactMap(\.id.routedExpert)
        XCTAssertFalse(pairs.isEmpty)
        XCTAssertTrue(pairs.allSatisfy { keep($0.layer, $0.expert) })
        let all = try ModelDirectory(url: model).loadParameters().ordered.compactMap(\.id.routedExpert)
        XCTAssertEqual(pairs.count, all.filter { keep($0.layer, $0.expert) }.count)
    }

    func testBadInputIsAClearErrorAndLeavesNothing() throws {
        let f = try ModelFixture("lite_yarn_oldcfg")
        func expectFailure(_ mentions: [String], _ body: () throws -> Void, file: StaticString = #filePath, line: UInt = #line) {
            XCTAssertThrowsError(try body(), file: file, line: line) { e in
                for m in mentions { XCTAssert("\(e)".contains(m), "'\(e)' should mention '\(m)'", file: file, line: line) }
            }
        }
        // Import from a truncated checkpoint: error, and no output directory (nor a temporary one).
        let broken = dir.appendingPathComponent("broken")
        try FileManager.default.copyItem(at: f.directory, to: broken)
        let st = broken.appendingPathComponent("model.safetensors")
        try (try Data(contentsOf: st)).prefix(5000).write(to: st)
        let out = dir.appendingPathComponent("out")
        expectFailure(["model.safetensors"]) { try ModelImport.run(from: broken, to: out, dtype: nil, expertShards: 1) }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted(), ["broken"], "nothing written")

        // Output exists already.
        let model = dir.appendingPathComponent("model")
        try ModelImport.run(from: f.directory, to: model, dtype: nil, expertShards: 2)
        expectFailure(["already exists"]) { try ModelImport.run(from: f.directory, to: model, dtype: nil, expertShards: 2) }
        expectFailure(["--expert-shards"]) { try ModelImport.run(from: f.directory, to: out, dtype: nil, expertShards: 99) }

        // A compressed (chunked) dataset cannot be mapped: say which, and how to fix it.
        let h5repack = "/usr/bin/h5repack"
        if FileManager.default.isExecutableFile(atPath: h5repack) {
            let packed = dir.appendingPathComponent("packed")
            try FileManager.default.copyItem(at: model, to: packed)
            let file = packed.appendingPathComponent("model.h5")
            let tmp = dir.appendingPathComponent("gz.h5")
            let r = try Executables.run(URL(fileURLWithPath: h5repack), ["-f", "GZIP=1", file.path, tmp.path])
            XCTAssertEqual(r.status, 0, r.stderr)
            try FileManager.default.removeItem(at: file)
            try FileManager.default.moveItem(at: tmp, to: file)
            expectFailure(["model.h5", "cannot be memory-mapped", "compressed", "esft import"]) { _ = try LoadedModel.open(packed) }
        }
        // A shard from a different split, a missing shard, a truncated file.
        let shard = model.appendingPathComponent(ModelDirectoryLayout.expertFile(1, of: 2))
        let saved = try Data(contentsOf: shard)
        try FileManager.default.removeItem(at: shard)
        expectFailure([shard.lastPathComponent, "no such file"]) { _ = try ModelDirectory(url: model) }
        try saved.prefix(saved.count / 2).write(to: shard)
        expectFailure([shard.lastPathComponent]) { _ = try ModelDirectory(url: model).loadParameters() }
        try saved.write(to: shard)
        XCTAssertNoThrow(try ModelDirectory(url: model).loadParameters())
        // A directory written by a newer esft.
        let newer = dir.appendingPathComponent("newer")
        try FileManager.default.copyItem(at: model, to: newer)
        do {
            let f = try H5File.openReadWrite(newer.appendingPathComponent("model.h5").path)
            try f.attributes.set("esft_format_version", Int64(ModelDirectoryLayout.version + 1))
            try f.close()
        }
        expectFailure(["model.h5", "version 2 is newer", "upgrade esft"]) { _ = try ModelDirectory(url: newer) }
        // Not an esft directory at all.
        expectFailure(["model.h5"]) { _ = try ModelDirectory(url: f.directory) }
    }
}

import ESFTBase
import ESFTData
import ESFTMethod
import ESFTModel
import ESFTStore
import Foundation

/// Every hand-written parser of esft, as a function of one input's bytes: it must return (accepting or refusing
/// the input with an error), never trap, hang or overflow. Errors are the expected outcome of most inputs and are
/// dropped; a crash, an ASan report or a libFuzzer timeout/OOM is a finding (docs/testing.md, "Fuzzing").
enum FuzzTargets {
    /// Files a target must see on disk (mapped or opened by a C library) go to a private scratch directory.
    static let scratch: URL = {
        let base = FileManager.default.fileExists(atPath: "/dev/shm") ? "/dev/shm" : NSTemporaryDirectory()
        let url = URL(fileURLWithPath: base).appendingPathComponent("esft-fuzz-\(getpid())")
        try? FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }()

    static func file(_ name: String, _ data: Data) -> URL {
        let url = scratch.appendingPathComponent(name)
        try? FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try? data.write(to: url)
        return url
    }

    /// A tiny model's config, for inputs that are one file of a model directory.
    static let tinyConfig = Data(#"{"model_type": "deepseek_v2", "vocab_size": 64, "hidden_size": 16, "intermediate_size": 32, "moe_intermediate_size": 8, "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 2, "q_lora_rank": null, "kv_lora_rank": 8, "qk_nope_head_dim": 4, "qk_rope_head_dim": 4, "v_head_dim": 4, "n_routed_experts": 4, "n_shared_experts": 1, "num_experts_per_tok": 2, "first_k_dense_replace": 1, "moe_layer_freq": 1, "topk_method": "greedy", "norm_topk_prob": false, "routed_scaling_factor": 1.0, "rms_norm_eps": 1e-6, "max_position_embeddings": 64, "tie_word_embeddings": false, "rope_theta": 10000}"#.utf8)

    /// A valid model directory of `tinyConfig` (esft init, seed 0, fp32, one expert shard) whose model.h5 the
    /// model-directory target replaces; Tests/Fuzz/model-directory/model.h5 is its model.h5.
    static let templateModel: URL? = {
        let url = scratch.appendingPathComponent("template")
        guard let r = try? JSONReader.parse(tinyConfig, source: "fuzz", what: "config"), let c = try? ModelConfig(json: r) else { return nil }
        try? ModelInit.run(config: c, configJSON: tinyConfig, to: url, seed: 0, dtype: .fp32, expertShards: 1)
        return url
    }()

    /// Each returns whether the input was accepted (parsed through), so a replay can say how deep its seeds reach.
    static let all: [String: (Data) -> Bool] = [
        // The one JSON reader (Foundation's decoder under JSONReader), walked like a config.
        "json": { data in
            guard let r = try? JSONReader.parse(data, source: "fuzz", what: "input") else { return false }
            func walk(_ r: JSONReader, _ depth: Int) {
                guard depth < 64 else { return }
                if let keys = try? r.keys() { for k in keys { if let c = try? r.field(k) { walk(c, depth + 1) } } }
                if let items = try? r.items() { for i in items { walk(i, depth + 1) } }
                _ = try? r.double(); _ = try? r.int(); _ = try? r.string(); _ = try? r.bool()
            }
            walk(r, 0)
            return true
        },
        // A safetensors header (and every tensor's values, as import would read them).
        "safetensors": { data in
            let url = file("model.safetensors", data)
            guard let f = try? SafetensorsFile(path: url.path) else { return false }
            for e in f.entries.values where e.count <= 1 << 16 {
                var out = [Float](repeating: 0, count: e.count)
                out.withUnsafeMutableBufferPointer { f.readFloats(e, count: e.count, into: $0.baseAddress!) }
            }
            return true
        },
        // tokenizer.json (its own streaming reader), then a round trip of a short text.
        "tokenizer": { data in
            guard let t = try? HFTokenizer(data: data) else { return false }
            _ = t.decode(t.encode("Hello, wörld! 123 <|endoftext|>"))
            return true
        },
        // config.json of any family, and the parameter list it implies.
        "model-config": { data in
            guard let r = try? JSONReader.parse(data, source: "fuzz", what: "config"), let c = try? ModelConfig(json: r) else { return false }
            _ = ModelSizes(c).parameters
            // The list itself only for configs a command would go on with (they check sizes in closed form first).
            if Double(c.numLayers) * Double(3 * c.nRoutedExperts + 20) < 1e6 { _ = c.parameterSpecs().count }
            return true
        },
        "expert-config": { data in (try? ExpertConfig(jsonData: data, source: "fuzz")) != nil },
        "scores": { data in (try? RelevanceScores(jsonData: data, source: "fuzz")) != nil },
        // A checkpoint's manifest.json (the folder's files are absent: reading stops at the manifest or its list).
        "manifest": { data in
            let folder = scratch.appendingPathComponent("step-000001")  // the seed's step: the name must match it
            _ = file("step-000001/manifest.json", data)
            guard let m = try? CheckpointManifest(folder: folder) else { return false }
            _ = m.tensorFiles; _ = try? m.checkFiles()
            return true
        },
        // The reference's routing logs (expert_weights_<layer>.txt, hand-parsed).
        "routing-log": { data in
            data.withUnsafeBytes { b in (try? ReferenceRoutingLog(path: "fuzz", layer: 1, bytes: b, topK: 6, experts: 64)) != nil }
        },
        // A token dataset (HDF5, through libhdf5) and its first rows.
        "token-dataset": { data in
            let url = file("data.h5", data)
            guard let d = try? TokenDataset(path: url.path) else { return false }
            if d.rows > 0 { _ = try? d.inputIds(rows: 0..<min(2, d.rows)); _ = try? d.labels(rows: 0..<min(2, d.rows)) }
            return true
        },
        // model.h5 of a model directory (HDF5, through libhdf5), every tensor located and checked.
        "model-directory": { data in
            let dir = scratch.appendingPathComponent("model")
            guard let template = templateModel else { return false }
            if !FileManager.default.fileExists(atPath: dir.appendingPathComponent("config.json").path) {
                try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
                for name in ["config.json", ModelDirectoryLayout.expertFile(0, of: 1)] {
                    try? FileManager.default.copyItem(at: template.appendingPathComponent(name), to: dir.appendingPathComponent(name))
                }
            }
            _ = file("model/model.h5", data)
            guard let m = try? ModelDirectory(url: dir) else { return false }
            return (try? m.tensorInfos()) != nil
        },
    ]
}

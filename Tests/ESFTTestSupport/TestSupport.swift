import ESFTKernels
import ESFTModel
import ESFTStore
import Foundation

/// Paths and comparisons shared by the test targets.
public enum Fixtures {
    public static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Fixtures")
    public static var models: URL { root.appendingPathComponent("models") }
    /// Fixtures of the other families (qwen3_moe, qwen2_moe, olmoe, mixtral), written by scripts/gen_family_fixtures.py.
    public static var families: URL { root.appendingPathComponent("families") }

    /// DeepSeek-V3 fixtures, written by scripts/gen_v3_fixtures.py.
    public static var v3: URL { root.appendingPathComponent("v3") }

    /// FP8 block-quantized DeepSeek-V3 checkpoints with torch's dequantization, written by scripts/gen_fp8_fixtures.py.
    public static var v3fp8: URL { root.appendingPathComponent("v3fp8") }

    public static func familyNames() throws -> [String] { try names(in: families) }

    /// The fixture folders (those with an expected.safetensors) under `folder`.
    public static func names(in folder: URL) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: folder.path)
            .filter { FileManager.default.fileExists(atPath: folder.appendingPathComponent($0).appendingPathComponent("expected.safetensors").path) }
            .sorted()
    }

    /// Every model fixture folder (written by scripts/gen_model_fixtures.py).
    public static func modelNames() throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: models.path)
            .filter { FileManager.default.fileExists(atPath: models.appendingPathComponent($0).appendingPathComponent("expected.safetensors").path) }
            .sorted()
    }

    public static func tempDirectory(_ tag: String = "esft") throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("\(tag)-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }
}

/// A loaded fixture: model, inputs and expected outputs.
public struct ModelFixture {
    public let name: String
    public let directory: URL
    public let checkpoint: HFCheckpoint
    public let parameters: ParameterSet
    public let model: MoETransformer
    public let batch: TokenBatch
    public let expected: SafetensorsFile

    public init(_ name: String, in root: URL = Fixtures.models) throws {
        self.name = name
        directory = root.appendingPathComponent(name)
        checkpoint = try HFCheckpoint(directory: directory)
        (parameters, _) = try checkpoint.loadParameters()
        model = try MoETransformer(config: checkpoint.config, parameters: parameters)
        batch = try Self.readInputs(directory.appendingPathComponent("inputs.json"))
        expected = try SafetensorsFile(path: directory.appendingPathComponent("expected.safetensors").path)
    }

    public func expectedArray(_ name: String) -> [Float]? {
        guard let e = expected.entries[name] else { return nil }
        var out = [Float](repeating: 0, count: e.count)
        out.withUnsafeMutableBufferPointer { expected.readFloats(e, count: e.count, into: $0.baseAddress!) }
        return out
    }

    static func readInputs(_ url: URL) throws -> TokenBatch {
        let obj = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        let ids = (obj["input_ids"] as! [[NSNumber]]).map { $0.map { Int32($0.intValue) } }
        let labels = ((obj["labels"] as? [[NSNumber]]) ?? obj["input_ids"] as! [[NSNumber]]).map { $0.map { Int32($0.intValue) } }
        return TokenBatch(batch: ids.count, seqLen: ids[0].count, inputIds: ids.flatMap { $0 }, labels: labels.flatMap { $0 })
    }
}

/// max |a − b| / max |b|: the error relative to the tensor's largest magnitude.
public func relativeToMax(_ a: UnsafeBufferPointer<Float>, _ b: [Float]) -> Double {
    precondition(a.count == b.count, "size mismatch \(a.count) vs \(b.count)")
    var diff = 0.0, scale = 0.0
    for i in 0..<b.count { diff = max(diff, Double(abs(a[i] - b[i]))); scale = max(scale, Double(abs(b[i]))) }
    return scale == 0 ? diff : diff / scale
}


/// Every tensor of a safetensors file as fp32 arrays by name (trained.safetensors, gradients).
public func readSafetensorsFloats(_ file: URL) throws -> [String: [Float]] {
    let f = try SafetensorsFile(path: file.path)
    var result: [String: [Float]] = [:]
    for (name, e) in f.entries {
        var v = [Float](repeating: 0, count: e.count)
        v.withUnsafeMutableBufferPointer { f.readFloats(e, count: e.count, into: $0.baseAddress!) }
        result[name] = v
    }
    return result
}

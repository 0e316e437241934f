import ESFTKernels
import ESFTModel
import Foundation

/// Opens either kind of model directory for compute: an esft model directory (model.h5 + expert
/// shards) or a Hugging Face one (config.json + safetensors).
public struct LoadedModel {
    public let config: ModelConfig
    public let parameters: ParameterSet
    public let format: String
    /// Stored tensors the model does not use (HF directories only).
    public let unused: [String]

    public static func isModelDirectory(_ url: URL) -> Bool {
        FileManager.default.fileExists(atPath: url.appendingPathComponent(ModelDirectoryLayout.nonExpertFile).path)
    }

    /// With `keep(layer, expert)`, an esft model directory maps only the routed experts it accepts
    /// (a rank's share under an expert placement).
    public static func open(_ url: URL, keepingExpert keep: ((Int, Int) -> Bool)? = nil) throws -> LoadedModel {
        if isModelDirectory(url) {
            let dir = try ModelDirectory(url: url)
            return LoadedModel(config: dir.config, parameters: try dir.loadParameters(keepingExpert: keep),
                               format: "esft model directory (\(dir.dtype.rawValue), \(dir.expertRanges.count) expert shard(s))", unused: [])
        }
        let checkpoint = try HFCheckpoint(directory: url)
        let (params, unused) = try checkpoint.loadParameters()
        return LoadedModel(config: checkpoint.config, parameters: params, format: "Hugging Face safetensors", unused: unused)
    }
}

/// The config.json of a model directory (either kind), after checking the directory exists.
func loadDirectoryConfig(_ url: URL) throws -> ModelConfig {
    var isDir: ObjCBool = false
    guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDir), isDir.boolValue else {
        throw ESFTError("\(url.path): not a directory")
    }
    return try ModelConfig.load(contentsOf: url.appendingPathComponent("config.json"))
}

import ESFTBase
import ESFTStore
import Foundation

/// `esft inspect CHECKPOINT_DIR`: what a checkpoint holds, with every array checked against its digest.
enum InspectCheckpoint {
    static func isCheckpoint(_ url: URL) -> Bool {
        FileManager.default.fileExists(atPath: url.appendingPathComponent(CheckpointLayout.manifest).path)
            || CheckpointLayout.step(ofFolder: url.lastPathComponent) != nil
    }

    static func run(_ url: URL, json: Bool) throws {
        let m = try CheckpointManifest(folder: url)
        try m.checkFiles()
        try m.verify()
        let r = m.reader
        let tensors = m.files.reduce(0) { $0 + $1.tensors.count }
        let parameters = m.files.reduce(0) { $0 + $1.tensors.reduce(0) { $0 + $1.count } }
        let sampler = try r.field("sampler"), counters = try r.field("counters")
        let valLoss = try? r.field("val_loss").double()
        if json {
            let result: [String: Any] = [
                "checkpoint": url.path, "step": m.step, "ranks": m.ranks, "trains": m.expertConfigJSON == nil ? "full" : "experts",
                "tensors": tensors, "trainable_parameters": parameters, "verified": true,
                "files": m.files.map { ["file": $0.file, "tensors": $0.tensors.count] as [String: Any] },
                "val_loss": valLoss ?? NSNull(),
            ]
            print(String(decoding: try JSONSerialization.data(withJSONObject: result, options: [.sortedKeys, .prettyPrinted]), as: UTF8.self))
            return
        }
        var lines = [
            "\(url.path): esft checkpoint after step \(m.step), written by \(m.ranks) rank(s) (esft \(try r.field("esft_version").string()))",
            "  trains: \(m.expertConfigJSON == nil ? "every parameter (--full)" : "the experts of an expert config"); \(tensors) tensors, \(parameters) parameters (weights + AdamW moments, fp32)",
            "  sampler: epoch \(try sampler.field("epoch").int()), position \(try sampler.field("position").int()); first loss \(try counters.field("first_loss").double())\(valLoss.map { "; val_loss \($0)" } ?? "")",
            "  threads \(try r.field("threads").int()), OpenBLAS \(try r.field("blas_core").string()); model \(m.modelFingerprint)",
        ]
        lines += m.files.map { "  \($0.file): \($0.tensors.count) tensors" }
        lines.append("  every array matches its checksum (\(3 * tensors) arrays)")
        print(lines.joined(separator: "\n"))
    }
}

import ESFTBase
import ESFTModel
import Foundation

/// Routing logs in the format of the ESFT reference (`expert_weights_<layer>.txt`, read back by
/// `ReferenceRoutingLogs`): per MoE layer one line per sample, its tokens' top-K expert ids (token-major,
/// tab separated), an empty field, then the matching gate scores g (docs/esft-method.md §1; for a sigmoid
/// router the weight before routed_scaling_factor). Scores are written with 9 decimals (they lie in [0, 1]), so
/// scores read back from the logs equal the model's to 5e-10 (the reference rounds to 4 decimals).
public struct RoutingLogLines {
    let layers: [Int]
    private var text: [Int: [UInt8]]

    init(layers: [Int]) {
        self.layers = layers
        text = Dictionary(uniqueKeysWithValues: layers.map { ($0, []) })
    }

    /// One line for the tokens of `view` (one sample).
    mutating func add(_ view: RoutingView) {
        guard text[view.layer] != nil else { return }
        let n = view.tokens * view.k
        var line = (0..<n).map { String(view.topkIdx[$0]) }.joined(separator: "\t")
        line += "\t\t" + (0..<n).map { String(format: "%.9f", Double(view.topkGate[$0])) }.joined(separator: "\t") + "\n"
        text[view.layer]!.append(contentsOf: line.utf8)
    }

    /// Every rank's lines to rank 0, in rank order (ranks hold contiguous runs of passes, so that is sample
    /// order); the other ranks get an empty result.
    func gather(to exchange: RowExchange) throws -> [Int: Data] {
        var out: [Int: Data] = [:]
        for layer in layers {
            let bytes = text[layer] ?? []
            var rowsTo = [Int](repeating: 0, count: exchange.ranks)
            rowsTo[0] = bytes.count
            let got = try bytes.withUnsafeBufferPointer { try exchange.exchangeRows($0, rowsTo: rowsTo, width: 1, tag: "score gather routing logs") }
            if exchange.rank == 0 { out[layer] = Data(got.values) }
        }
        return out
    }

    /// `dir/expert_weights_<layer>.txt` for every layer, the directory created whole or not at all.
    public static func write(_ logs: [Int: Data], to dir: URL) throws {
        try AtomicWrite.create(dir) { tmp in
            try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: false)
            for (layer, data) in logs { try data.write(to: tmp.appendingPathComponent("expert_weights_\(layer).txt")) }
        }
    }
}

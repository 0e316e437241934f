import ESFTBase
import Foundation

/// A directory of reference routing logs, `expert_weights_<layer>.txt` for layers 1...N, turned into
/// routing statistics: each line is one sample and every token on it counts.
public struct ReferenceRoutingLogs {
    public let directory: URL
    public let logs: [ReferenceRoutingLog]
    /// FNV-1a 64 over every file's layer and bytes, in layer order.
    public let digest: String
    public let topK: Int
    public let experts: Int

    public static let filePrefix = "expert_weights_"

    /// Finds, reads and checks every layer's log. Layers must run 1...N without gaps (N is the highest
    /// found), and every layer must hold the same samples with the same token counts.
    public init(directory: URL, topK: Int = 6, experts: Int = 64) throws {
        guard topK >= 1 && topK <= experts else {
            throw ESFTError("\(directory.path): top-k \(topK) must be in 1...\(experts) (the number of experts)")
        }
        self.directory = directory; self.topK = topK; self.experts = experts
        let files = try Self.layerFiles(in: directory)
        let contents = try files.map { layer, url -> (Int, String, Data) in
            do { return (layer, url.path, try Data(contentsOf: url)) } catch {
                throw ESFTError("\(url.path): cannot read (\(ErrorText.reason(error)))")
            }
        }
        var digest = FNV1a64()
        for (layer, _, data) in contents {
            digest.add("\(layer)\n")
            data.withUnsafeBytes { digest.add($0) }
        }
        self.digest = digest.hexDigest
        logs = try Self.parseConcurrently(contents, topK: topK, experts: experts)
        try Self.checkSameSamples(logs)
    }

    /// (layer, url) of every `expert_weights_<n>.txt`, ascending; reports missing layers.
    public static func layerFiles(in directory: URL) throws -> [(Int, URL)] {
        let names: [String]
        do { names = try FileManager.default.contentsOfDirectory(atPath: directory.path) } catch {
            throw ESFTError("\(directory.path): cannot list routing logs (\(ErrorText.reason(error)))")
        }
        var found: [(Int, URL)] = []
        for name in names where name.hasPrefix(filePrefix) && name.hasSuffix(".txt") {
            let middle = name.dropFirst(filePrefix.count).dropLast(4)
            if let layer = Int(middle), layer >= 0, "\(layer)" == middle {
                found.append((layer, directory.appendingPathComponent(name)))
            }
        }
        found.sort { $0.0 < $1.0 }
        guard let last = found.last?.0 else {
            throw ESFTError("\(directory.path): no routing logs (\(filePrefix)<layer>.txt) found")
        }
        let have = Set(found.map(\.0))
        let missing = (min(1, found[0].0)...last).filter { !have.contains($0) }
        guard missing.isEmpty else {
            throw ESFTError("\(directory.path): routing logs for layer(s) \(missing.map(String.init).joined(separator: ", ")) are missing (found layers \(ExpertConfig.describe(found.map(\.0))); expected \(filePrefix)<layer>.txt for every layer 1...\(last))")
        }
        return found
    }

    /// Parses files on every core; the first error in layer order wins, so messages are reproducible.
    private static func parseConcurrently(_ files: [(Int, String, Data)], topK: Int, experts: Int) throws -> [ReferenceRoutingLog] {
        final class Results: @unchecked Sendable {
            var logs: [Result<ReferenceRoutingLog, Error>?]
            let lock = NSLock()
            init(_ n: Int) { logs = Array(repeating: nil, count: n) }
        }
        let results = Results(files.count)
        DispatchQueue.concurrentPerform(iterations: files.count) { i in
            let (layer, path, data) = files[i]
            let r = Result { try data.withUnsafeBytes { try ReferenceRoutingLog(path: path, layer: layer, bytes: $0, topK: topK, experts: experts) } }
            results.lock.lock(); results.logs[i] = r; results.lock.unlock()
        }
        return try results.logs.map { try $0!.get() }
    }

    private static func checkSameSamples(_ logs: [ReferenceRoutingLog]) throws {
        let first = logs[0]
        for log in logs.dropFirst() {
            guard log.tokensPerSample.count == first.tokensPerSample.count else {
                throw ESFTError("\(log.path): \(log.tokensPerSample.count) samples (lines), but \(first.path) has \(first.tokensPerSample.count); every layer's log must cover the same forward passes")
            }
            if let j = log.tokensPerSample.indices.first(where: { log.tokensPerSample[$0] != first.tokensPerSample[$0] }) {
                throw ESFTError("\(log.path):\(j + 1): \(log.tokensPerSample[j]) tokens, but \(first.path):\(j + 1) has \(first.tokensPerSample[j]); every layer's log must cover the same tokens")
            }
        }
    }

    public var layers: [Int] { logs.map(\.layer) }

    /// Routing statistics over every line of every layer (each line one sample, every token counted).
    public func statistics() throws -> RoutingStatistics {
        var stats = try RoutingStatistics(layers: layers, experts: experts, topK: topK)
        for log in logs {
            var offset = 0
            for n in log.tokensPerSample {
                let range = offset..<(offset + n * topK)
                try log.ids.withUnsafeBufferPointer { ids in
                    try log.weights.withUnsafeBufferPointer { w in
                        try stats.add(layer: log.layer, ids: UnsafeBufferPointer(rebasing: ids[range]),
                                      probs: UnsafeBufferPointer(rebasing: w[range]), grouping: .oneSample(tokens: n))
                    }
                }
                offset = range.upperBound
            }
        }
        return stats
    }
}

import ESFTKernels
import ESFTMethod
import ESFTModel
import ESFTStore
import ESFTTestSupport
import ESFTTrain
import Foundation
import XCTest

/// `ActivationMemory` against a real model's buffers (PlanCommandTests compares `esft plan` with measured runs).
final class ActivationMemoryTests: XCTestCase {
    static let configs = Fixtures.root.deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("configs")

    /// One rank: every buffer's size follows from shapes and the routing of the batch (rows per expert),
    /// so the prediction must equal `activationBytes` exactly after a training forward and backward.
    /// With 1 thread and with 3 (experts' backward side by side: two more workers' scratch sets).
    func testPredictionEqualsTheModelsBuffers() throws {
        let before = Threads.count
        defer { Threads.set(before) }
        for threads in [1, 3] {
            Threads.set(threads)
            for (name, trainable) in [("tiny", [1: [0, 5, 13], 2: [7, 15]]), ("small", [1: [1, 9], 3: [17], 5: [63]])] {
                let config = try ModelConfig.load(contentsOf: Self.configs.appendingPathComponent("\(name).json"))
                let params = ParameterSet.randomlyInitialized(config, seed: 3)
                let cfg = ExpertConfig(experts: Dictionary(uniqueKeysWithValues: config.moeLayers.map { ($0, trainable[$0] ?? []) }))
                let set = cfg.trainableSet(model: config)
                for p in params.ordered where set.contains(p.id) { p.makeTrainable() }
                let model = try MoETransformer(config: config, parameters: params)
                var perExpert: [Int: [Int]] = [:]
                model.routingObserver = { v in
                    var counts = [Int](repeating: 0, count: v.experts)
                    for i in 0..<(v.tokens * v.k) { counts[Int(v.topkIdx[i])] += 1 }
                    perExpert[v.layer] = counts
                }
                let rows = 3, t = 48
                var rng = SplitMix64(seed: 1)
                let ids = (0..<(rows * t)).map { _ in Int32(32 + rng.next() % 90) }
                let batch = TokenBatch(batch: rows, seqLen: t, inputIds: ids, labels: ids)
                _ = try model.forward(batch, training: true)
                try model.backward()
                let n = rows * t, k = config.expertsPerToken
                var dispatch: [Int: ActivationMemory.Dispatch] = [:], local: [Int: Int] = [:]
                for l in config.moeLayers {
                    dispatch[l] = .init(sent: Double(n), received: Double(n), assignments: Double(n * k), maxExpertRows: Double(perExpert[l]!.max()!))
                    local[l] = config.nRoutedExperts
                }
                let lowest = set.lowestLayer(numLayers: config.numLayers)
                let predicted = ActivationMemory(config: config, tokens: n, seqLen: t, ranks: 1, threads: threads, lowest: lowest, validation: false,
                                                 attentionBackward: { $0 > lowest }, dispatch: dispatch, localExperts: local)
                print("\(name), \(threads) thread(s): activation buffers \(model.activationBytes) bytes, predicted \(Int(predicted.total)) (saved \(Int(predicted.saved)), workspaces \(Int(predicted.workspace)))")
                XCTAssertEqual(Int(predicted.total), model.activationBytes, "\(name), \(threads) thread(s): every buffer accounted for")
            }
        }
    }
}

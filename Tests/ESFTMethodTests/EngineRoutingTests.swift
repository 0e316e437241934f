import ESFTKernels
import ESFTMethod
import ESFTModel
import ESFTStore
import Foundation
import XCTest

/// Feeds the engine's routing observer into RoutingStatistics, as model-based scoring will.
final class EngineRoutingTests: XCTestCase {
    func testObserverFeedsStatistics() throws {
        let dir = MethodTestSupport.repoRoot.appendingPathComponent("Tests/Fixtures/models/lite_yarn_oldcfg")
        guard FileManager.default.fileExists(atPath: dir.appendingPathComponent("config.json").path) else {
            throw XCTSkip("model fixture \(dir.path) absent")
        }
        let checkpoint = try HFCheckpoint(directory: dir)
        let (params, _) = try checkpoint.loadParameters()
        let config = checkpoint.config
        let model = try MoETransformer(config: config, parameters: params)
        let inputs = try JSONSerialization.jsonObject(with: Data(contentsOf: dir.appendingPathComponent("inputs.json"))) as! [String: Any]
        let rows = (inputs["input_ids"] as! [[Int]]).map { $0.map(Int32.init) }
        let b = rows.count, t = rows[0].count, k = config.expertsPerToken
        let batch = TokenBatch(batch: b, seqLen: t, inputIds: rows.flatMap { $0 }, labels: rows.flatMap { $0 })

        // Row r is sample r; the last 3 positions of row 1 play padding.
        var sample = (0..<(b * t)).map { Int32($0 / t) }
        for p in (2 * t - 3)..<(2 * t) { sample[p] = -1 }
        let grouping = try TokenGrouping(sampleOfToken: sample)

        var stats = try RoutingStatistics(model: config)
        var seen: [Int: ([Int32], [Float])] = [:]
        var failure: Error?
        model.routingObserver = { view in
            do { try stats.add(view, grouping: grouping) } catch { failure = error }
            seen[view.layer] = (Array(UnsafeBufferPointer(start: view.topkIdx, count: view.tokens * view.k)),
                                Array(UnsafeBufferPointer(start: view.topkGate, count: view.tokens * view.k)))
        }
        _ = try model.forward(batch, training: false)
        if let failure { throw failure }
        XCTAssertEqual(Set(seen.keys), Set(config.moeLayers))

        let scores = try RelevanceScores(statistics: stats, normalize: .samples, source: "fixture")
        XCTAssertEqual(scores.metadata.tokens, b * t - 3)
        XCTAssertEqual(scores.metadata.samples, b)
        for layer in config.moeLayers {
            let (ids, probs) = seen[layer]!
            // The paper's formula, written out directly.
            var gate = [Double](repeating: 0, count: config.nRoutedExperts), token = gate
            for r in 0..<b {
                let counted = (0..<t).filter { sample[r * t + $0] >= 0 }
                for p in counted {
                    for j in 0..<k {
                        let slot = (r * t + p) * k + j, e = Int(ids[slot])
                        gate[e] += Double(probs[slot]) / Double(counted.count) / Double(b)
                        token[e] += 1 / Double(k) / Double(counted.count) / Double(b)
                    }
                }
            }
            assertClose(scores.gate[layer]!, gate, tolerance: 1e-12)
            assertClose(scores.token[layer]!, token, tolerance: 1e-12)
        }
    }
}

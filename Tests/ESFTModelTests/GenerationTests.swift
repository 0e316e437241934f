import ESFTKernels
import ESFTModel
import ESFTTestSupport
import XCTest

/// Incremental decoding with the KV cache against the engine's full forward, on every HF fixture (MLA with
/// q_lora null and set, YaRN, dense and MoE layers, group-limited routing, tied heads) and every family
/// fixture (GQA with 1 to 4 key/value heads, per-head and full-width q/k norms, biases, rotate-half RoPE).
final class GenerationTests: XCTestCase {
    /// At every step, each sequence's logits equal the full forward's last-position logits on prompt +
    /// tokens so far, and the greedy token is that forward's argmax. Both compute the same sums; only GEMM
    /// shapes differ (1 row vs T rows, keys from the cache), so fp32 rounding of a few ulps times the
    /// reduction depth (≤ hidden and attention widths, ~10²) stays well inside 1e-4 of the largest logit,
    /// the parity tests' logits bound. Batching prompts of different lengths must not change anything.
    func testCachedDecodingMatchesTheFullForward() throws {
        let all = try Fixtures.modelNames().map { ($0, Fixtures.models) } + Fixtures.familyNames().map { ($0, Fixtures.families) }
            + Fixtures.names(in: Fixtures.v3).map { ($0, Fixtures.v3) }
        for (name, root) in all {
            let f = try ModelFixture(name, in: root)
            let v = f.checkpoint.config.vocabSize, t = f.batch.seqLen
            let prompts = [Array(f.batch.inputIds[0..<min(5, t)]), Array(f.batch.inputIds[t..<(t + min(9, t))])]
            let newTokens = 6
            let decoder = try IncrementalDecoder(model: f.model, slots: 2, capacity: 9 + newTokens)
            var seen: [Int: [[Float]]] = [:]
            let outputs = try GreedyGeneration.run(decoder, prompts: prompts, maxNewTokens: newTokens, stop: []) { _, slot, logits in
                seen[slot, default: []].append(Array(logits))
            }
            for (slot, out) in outputs.enumerated() {
                XCTAssertEqual(out.tokens.count, newTokens, "\(name): no stop token, so the length limit ends it")
                XCTAssertFalse(out.stopped)
                for step in 0..<newTokens {
                    let ids = prompts[slot] + out.tokens.prefix(step)
                    let batch = TokenBatch(batch: 1, seqLen: ids.count, inputIds: ids,
                                           labels: [Int32](repeating: CrossEntropy.ignoreIndex, count: ids.count))
                    _ = try f.model.forward(batch, training: false)
                    let all = f.model.logits(count: ids.count * v)
                    let full = Array(all[((ids.count - 1) * v)..<(ids.count * v)])
                    let cached = try XCTUnwrap(seen[slot]?[step])
                    let err = cached.withUnsafeBufferPointer { relativeToMax($0, full) }
                    XCTAssertLessThan(err, 1e-4, "\(name), sequence \(slot), step \(step): logits")
                    let argmax = full.indices.max { full[$0] < full[$1] || (full[$0] == full[$1] && $0 > $1) }!
                    XCTAssertEqual(Int(out.tokens[step]), argmax, "\(name), sequence \(slot), step \(step): greedy token")
                }
            }
            // Each prompt alone: the same tokens as in the batch.
            let alone = try IncrementalDecoder(model: f.model, slots: 1, capacity: 9 + newTokens)
            for (slot, prompt) in prompts.enumerated() {
                let single = try GreedyGeneration.run(alone, prompts: [prompt], maxNewTokens: newTokens, stop: [])
                XCTAssertEqual(single[0].tokens, outputs[slot].tokens, "\(name): sequence \(slot) alone vs batched")
            }
        }
    }

    /// A stop token ends a sequence (kept in its output) while the other goes on; the cache refuses to
    /// grow past its capacity and the model's max_position_embeddings.
    func testStopTokenAndLimits() throws {
        let name = try XCTUnwrap(Fixtures.modelNames().first)
        let f = try ModelFixture(name)
        let t = f.batch.seqLen
        let prompts = [Array(f.batch.inputIds[0..<4]), Array(f.batch.inputIds[t..<(t + 4)])]
        let decoder = try IncrementalDecoder(model: f.model, slots: 2, capacity: 12)
        let free = try GreedyGeneration.run(decoder, prompts: prompts, maxNewTokens: 5, stop: [])
        // Stop on sequence 0's third token: it must end there, sequence 1 must be unchanged unless it meets it.
        let stopToken = free[0].tokens[2]
        let stopped = try GreedyGeneration.run(decoder, prompts: prompts, maxNewTokens: 5, stop: [stopToken])
        let firstStop = free[0].tokens.firstIndex(of: stopToken)!
        XCTAssertEqual(stopped[0].tokens, Array(free[0].tokens.prefix(firstStop + 1)))
        XCTAssertTrue(stopped[0].stopped)
        let other = free[1].tokens.firstIndex(of: stopToken).map { Array(free[1].tokens.prefix($0 + 1)) } ?? free[1].tokens
        XCTAssertEqual(stopped[1].tokens, other)
        XCTAssertThrowsError(try GreedyGeneration.run(decoder, prompts: [Array(repeating: 1, count: 10)], maxNewTokens: 5, stop: []))
        XCTAssertThrowsError(try IncrementalDecoder(model: f.model, slots: 1, capacity: f.checkpoint.config.maxPositionEmbeddings + 1))
    }
}

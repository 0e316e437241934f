import ESFTKernels
import Foundation

/// Incremental inference over a `MoETransformer` with a KV cache per layer: `step` runs only the new
/// tokens of each sequence (a prompt once, then one token per step) and returns the logits of each
/// sequence's last new token. Buffers are its own (the model's training buffers are left alone) and grow
/// to the largest call, then are reused.
public final class IncrementalDecoder {
    public let model: MoETransformer
    public let slots: Int, capacity: Int
    private let caches: [LayerKVCache]
    private let saved = LayerSaved(), scratch = Scratch()
    private let hidden = [Reusable<Float>(), Reusable<Float>()]
    private let last_SD = Reusable<Float>(), lastNormed_SD = Reusable<Float>(), rstd_S = Reusable<Float>(), logits_SV = Reusable<Float>()
    private let ropeCos: FloatBuffer, ropeSin: FloatBuffer
    /// Tokens cached per slot.
    public private(set) var lengths: [Int]

    /// `slots` sequences of up to `capacity` tokens each (prompt + generated).
    public init(model: MoETransformer, slots: Int, capacity: Int) throws {
        let c = model.config
        guard slots >= 1, capacity >= 1 else { throw ESFTError("the decoder needs at least one sequence and one position") }
        guard capacity <= c.maxPositionEmbeddings else {
            throw ESFTError("prompt + new tokens = \(capacity) positions, more than the model's max_position_embeddings \(c.maxPositionEmbeddings)")
        }
        self.model = model; self.slots = slots; self.capacity = capacity
        caches = model.layers.map { $0.attention.makeCache(slots: slots, capacity: capacity) }
        let (cos, sin) = model.rope.tables(length: capacity)
        ropeCos = FloatBuffer(count: cos.count, zeroed: false); ropeSin = FloatBuffer(count: sin.count, zeroed: false)
        ropeCos.pointer.update(from: cos, count: cos.count); ropeSin.pointer.update(from: sin, count: sin.count)
        lengths = [Int](repeating: 0, count: slots)
    }

    /// Bytes of the KV caches.
    public var cacheBytes: Int { caches.reduce(0) { $0 + $1.bytes } }

    /// Appends `tokens[slot]` (any number ≥ 1 per listed slot) to those sequences and returns the logits
    /// [S, V] of each one's last new token, in the order given.
    public func step(_ tokens: [(slot: Int, ids: [Int32])]) throws -> UnsafeBufferPointer<Float> {
        let c = model.config, d = c.hiddenSize, v = c.vocabSize
        var spans: [DecodeSpan] = [], ids: [Int32] = []
        for (slot, new) in tokens {
            guard (0..<slots).contains(slot), !new.isEmpty else { throw ESFTError("decode step: slot \(slot) with \(new.count) tokens") }
            guard lengths[slot] + new.count <= capacity else {
                throw ESFTError("sequence \(slot): \(lengths[slot] + new.count) tokens exceed the decoder's \(capacity) positions")
            }
            if let bad = new.first(where: { $0 < 0 || Int($0) >= v }) { throw ESFTError("token id \(bad) is outside the vocabulary (vocab_size \(v))") }
            spans.append(DecodeSpan(row: ids.count, count: new.count, slot: slot, position: lengths[slot]))
            ids += new
        }
        let n = ids.count
        let x0 = hidden[0].reuse(count: n * d)
        ids.withUnsafeBufferPointer { p in
            parallelChunks(n, grain: 64) { r in for t in r { model.embed.copyRows(Int(p[t]), 1, into: x0 + t * d) } }
        }
        let rope = RopeTables(cos: ropeCos.pointer, sin: ropeSin.pointer, softmaxScale: model.rope.softmaxScale)
        for (l, layer) in model.layers.enumerated() {
            try layer.decode(x: hidden[l % 2].reuse(count: n * d), out: hidden[(l + 1) % 2].reuse(count: n * d), rows: n,
                             spans: spans, cache: caches[l], rope: rope, saved: saved, scratch: scratch)
        }
        for s in spans { lengths[s.slot] += s.count }
        // The head runs on each span's last row only: [S, D] → [S, V].
        let out = hidden[model.layers.count % 2].reuse(count: n * d), m = spans.count
        let last = last_SD.reuse(count: m * d), normed = lastNormed_SD.reuse(count: m * d), logits = logits_SV.reuse(count: m * v)
        for (i, s) in spans.enumerated() { (last + i * d).update(from: out + (s.row + s.count - 1) * d, count: d) }
        RMSNorm.forward(x: last, weight: model.finalNorm.value, eps: c.rmsNormEps, y: normed, rstd: rstd_S.reuse(count: m), rows: m, dim: d)
        Linear.forward(x: normed, weight: model.lmHead.weight, bias: nil, y: logits, n: m, inDim: d, outDim: v)
        return UnsafeBufferPointer(start: logits, count: m * v)
    }

    /// Forgets every sequence (the caches are overwritten by the next prompts).
    public func reset() { lengths = [Int](repeating: 0, count: slots) }
}

/// Greedy generation: the argmax token (lowest id among equal maxima, as torch.argmax) until a stop token
/// (kept in the output) or `maxNewTokens`.
public enum GreedyGeneration {
    public struct Output: Equatable, Sendable {
        public var tokens: [Int32]
        /// A stop token ended it (otherwise the length limit did).
        public var stopped: Bool
    }

    /// `observe(step, slot, logits)` sees every step's logits of every live sequence (tests compare them).
    public static func run(_ decoder: IncrementalDecoder, prompts: [[Int32]], maxNewTokens: Int, stop: Set<Int32>,
                           observe: ((Int, Int, UnsafeBufferPointer<Float>) -> Void)? = nil) throws -> [Output] {
        guard prompts.count <= decoder.slots else { throw ESFTError("\(prompts.count) prompts for \(decoder.slots) decoder slots") }
        guard maxNewTokens >= 1 else { throw ESFTError("max new tokens must be ≥ 1") }
        if let i = prompts.firstIndex(where: \.isEmpty) { throw ESFTError("prompt \(i) is empty") }
        decoder.reset()
        let v = decoder.model.config.vocabSize
        var outputs = prompts.map { _ in Output(tokens: [], stopped: false) }
        var pending = prompts.indices.map { (slot: $0, ids: prompts[$0]) }
        for step in 0..<maxNewTokens where !pending.isEmpty {
            let logits = try decoder.step(pending)
            var next: [(slot: Int, ids: [Int32])] = []
            for (i, item) in pending.enumerated() {
                let row = UnsafeBufferPointer(rebasing: logits[(i * v)..<((i + 1) * v)])
                observe?(step, item.slot, row)
                var best = 0
                for j in 1..<v where row[j] > row[best] { best = j }
                let token = Int32(best)
                outputs[item.slot].tokens.append(token)
                if stop.contains(token) { outputs[item.slot].stopped = true } else { next.append((item.slot, [token])) }
            }
            pending = next
        }
        return outputs
    }
}

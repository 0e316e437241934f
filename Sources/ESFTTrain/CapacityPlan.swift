import ESFTBase
import ESFTKernels
import ESFTMethod
import ESFTModel
import Foundation

/// How tokens choose experts, for the dispatch terms of a capacity plan.
public enum RoutingAssumption {
    /// Every expert equally likely, a token's top-k distinct.
    case uniform
    /// Each expert's inclusion probability per layer (a scores file's token selection ratio × k); tokens
    /// are drawn from it by successive sampling without replacement.
    case inclusion([Int: [Double]])
    /// Recorded tokens per layer (routing logs): exact rows per (token, rank).
    case tokens([Int: LayerRouting])
}

/// What `esft plan` predicts for one rank.
public struct RankCapacity {
    public var trainableParameters = 0
    /// fp32 weights, gradients and both AdamW moments of the trainable tensors this rank holds.
    public var optimizerBytes = 0.0
    /// Activations kept for backward and the head's logits (`ActivationMemory.saved`).
    public var activationBytes = 0.0
    public var workspaceBytes = 0.0
    /// The token dataset's split and sample table (held by every rank) and one step's rows, every
    /// micro-batch (ids and labels: rows are read from the file as batches need them).
    public var datasetBytes = 0.0
    /// bf16 1-D tensors (norms) are widened into owned fp32.
    public var widenedBytes = 0.0
    /// The process itself and what the other terms miss (Swift runtime, MPI, OpenBLAS, HDF5, allocator
    /// slack), fitted to measured runs: see `CapacityPlan.runtimeBytes`.
    public var runtimeBytes = 0.0
    /// Mapped frozen weights forward and backward read (page cache, shared between ranks of a node).
    public var mappedFrozenBytes = 0.0
    public var anonymousBytes: Double {
        optimizerBytes + activationBytes + workspaceBytes + datasetBytes + widenedBytes + runtimeBytes
    }
}

/// Predicts per-rank memory and per-step collective bytes of `esft train` (docs/performance.md compares
/// it with measured runs).
public struct CapacityPlan {
    public struct Job {
        public var config: ModelConfig
        public var trainable: TrainableSet
        public var ranks = 1, threads = 1, batchRows = 8, seqLen = 128, accumulation = 1
        public var validation = false
        /// Activation checkpointing (esft train --recompute).
        public var recompute = false
        public var placement: ExpertPlacement
        public var routing = RoutingAssumption.uniform
        public var storedBytesPerElement = 2
        /// Rows and samples of the dataset (0 when unknown).
        public var datasetRows = 0, datasetSamples = 0

        public init(config: ModelConfig, trainable: TrainableSet, placement: ExpertPlacement) {
            self.config = config; self.trainable = trainable; self.placement = placement
        }
    }

    /// What the terms above do not count, fitted to measured runs (docs/performance.md, "Capacity
    /// plan"; tiny and small models, 1–3 ranks, 6–24 rows of 128 tokens, 1 thread, on the development
    /// machine: Swift 6, OpenMPI 4, OpenBLAS 0.3, HDF5 1.10): the process itself (4 MiB alone, 8 MiB per
    /// rank under mpirun), 6.5 KiB per tensor the rank opens (HDF5 metadata, the tensor's objects), and
    /// under mpirun 10% of the activations and workspaces on top (MPI and allocator slack, which grows
    /// with the rows exchanged). Not measured with more than one thread.
    public static func runtimeBytes(ranks: Int, tensors: Int, activations: Double) -> Double {
        (ranks == 1 ? 4.0 : 8.0) * 1048576 + Double(tensors) * 6.5 * 1024 + (ranks == 1 ? 0 : 0.1 * activations)
    }

    public let job: Job
    public private(set) var perRank: [RankCapacity] = []
    /// Bytes per optimizer step per collective tag (summed over ranks, as metrics.jsonl's "comm").
    public private(set) var collectives: [(tag: String, bytes: Double)] = []
    /// Rows per token per MoE layer under the routing assumption (one per (token, owner rank)).
    public private(set) var rowsPerToken: [Int: Double] = [:]

    public init(_ job: Job) throws {
        self.job = job
        let c = job.config, r = job.ranks, k = c.expertsPerToken
        guard job.batchRows % job.accumulation == 0 else {
            throw ESFTError("plan: --batch-rows \(job.batchRows) must be a multiple of --accumulation \(job.accumulation)")
        }
        let micro = job.batchRows / job.accumulation
        let rowsOf = RangeSplit.contiguousBlocks(count: r, total: micro).map(\.count)
        let total = Double(micro * job.seqLen)
        // Routing statistics per MoE layer and rank: P(a token has an expert on rank q), mean experts
        // on q per token, and each expert's share of tokens.
        var hit: [Int: [Double]] = [:], onRank: [Int: [Double]] = [:], share: [Int: [Double]] = [:]
        for l in c.moeLayers {
            let p = job.placement.layer(l)
            let routing: LayerRouting? = try {
                switch job.routing {
                case .uniform: return nil
                case .tokens(let logs):
                    guard let x = logs[l] else { throw ESFTError("plan: the routing logs have no layer \(l) (an MoE layer of the model)") }
                    return x
                case .inclusion(let probs):
                    guard let x = probs[l] else { throw ESFTError("plan: the scores have no layer \(l) (an MoE layer of the model)") }
                    return try Self.sample(layer: l, inclusion: x, k: k)
                }
            }()
            if let routing {
                guard routing.experts == c.nRoutedExperts, routing.k == k else {
                    throw ESFTError("plan: routing of layer \(l) has top-\(routing.k) of \(routing.experts) experts; the model \(k) of \(c.nRoutedExperts)")
                }
                var h = [Double](repeating: 0, count: r), m = h
                var seen = [Int](repeating: -1, count: r)
                for t in 0..<routing.tokens {
                    for j in 0..<k {
                        let q = p.owner(of: Int(routing.ids[t * k + j]))
                        m[q] += 1
                        if seen[q] != t { seen[q] = t; h[q] += 1 }
                    }
                }
                let n = Double(routing.tokens)
                hit[l] = h.map { $0 / n }; onRank[l] = m.map { $0 / n }; share[l] = routing.load.map { Double($0) / n }
            } else {
                // Uniform distinct top-k: P(no expert on q) = C(E−c_q, k) / C(E, k).
                let e = c.nRoutedExperts
                hit[l] = p.members.map { 1 - Self.chooseRatio(e - $0.count, e, k) }
                onRank[l] = p.members.map { Double(k * $0.count) / Double(e) }
                share[l] = [Double](repeating: Double(k) / Double(e), count: e)
            }
            // `!` (here and below, for hit, onRank, share, rowsPerToken): both branches above fill every MoE layer.
            rowsPerToken[l] = hit[l]!.reduce(0, +)
        }
        let lowest = job.trainable.lowestLayer(numLayers: c.numLayers)
        let specs = c.parameterSpecs()
        for q in 0..<r {
            var rank = RankCapacity()
            let n = rowsOf[q] * job.seqLen
            var dispatch: [Int: ActivationMemory.Dispatch] = [:], local: [Int: Int] = [:]
            for l in c.moeLayers {
                let members = job.placement.layer(l).members[q]
                let maxShare = members.map { share[l]![$0] }.max() ?? 0
                let mean = total * maxShare
                dispatch[l] = .init(sent: Double(n) * rowsPerToken[l]!, received: total * hit[l]![q], assignments: total * onRank[l]![q],
                                    maxExpertRows: min(total, mean + 3 * mean.squareRoot()))
                local[l] = members.count
            }
            let attnBack: (Int) -> Bool = { l in
                l > lowest || job.trainable.contains(.inputNorm(layer: l)) || specs.contains { s in
                    guard s.id.layer == l, case .attention = s.id.kind else { return false }
                    return job.trainable.contains(s.id)
                }
            }
            let act = ActivationMemory(config: c, tokens: n, seqLen: job.seqLen, ranks: r, threads: job.threads, lowest: lowest, validation: job.validation,
                                       recompute: job.recompute, attentionBackward: attnBack, dispatch: dispatch, localExperts: local)
            rank.activationBytes = act.saved; rank.workspaceBytes = act.workspace
            var tensors = 0
            for s in specs {
                let count = Double(s.count)
                let mine = s.id.routedExpert.map { job.placement.owns(rank: q, layer: $0.layer, expert: $0.expert) } ?? true
                guard mine else { continue }
                tensors += 1
                if job.trainable.contains(s.id) {
                    rank.trainableParameters += s.count; rank.optimizerBytes += 16 * count
                } else if s.shape.count == 1 && job.storedBytesPerElement == 2 {
                    rank.widenedBytes += 4 * count
                } else {
                    rank.mappedFrozenBytes += count * Double(job.storedBytesPerElement)
                }
            }
            rank.datasetBytes = Double(job.accumulation * rowsOf[q] * job.seqLen * 8 + job.datasetRows + job.datasetSamples * 32)
            rank.runtimeBytes = Self.runtimeBytes(ranks: r, tensors: tensors, activations: act.total)
            perRank.append(rank)
        }
        collectives = Self.collectives(job, rowsOf: rowsOf, hit: hit, rowsPerToken: rowsPerToken, lowest: lowest)
    }

    /// C(a, k) / C(b, k) for a ≤ b, as a product (no overflow).
    static func chooseRatio(_ a: Int, _ b: Int, _ k: Int) -> Double {
        guard a >= k else { return 0 }
        var x = 1.0
        for i in 0..<k { x *= Double(a - i) / Double(b - i) }
        return x
    }

    /// 20 000 tokens drawn without replacement from the inclusion weights (fixed seed, reproducible).
    static func sample(layer: Int, inclusion: [Double], k: Int) throws -> LayerRouting {
        var rng = SplitMix64(seed: 0x91A7 ^ UInt64(layer))
        var ids: [Int32] = []
        ids.reserveCapacity(20_000 * k)
        for _ in 0..<20_000 {
            var w = inclusion.map { max($0, 0) }
            for _ in 0..<k {
                let sum = w.reduce(0, +)
                var u = rng.nextUnit() * sum, pick = w.count - 1
                if sum > 0 { for (i, x) in w.enumerated() { u -= x; if u < 0 { pick = i; break } } } else { pick = w.firstIndex(of: 0) ?? 0 }
                while w[pick] < 0 { pick = (pick + 1) % w.count }
                ids.append(Int32(pick)); w[pick] = -1
                if sum <= 0 { break }
            }
        }
        return try LayerRouting(layer: layer, experts: inclusion.count, k: k, ids: ids)
    }

    /// Bytes each collective moves per step, summed over ranks (payload to other ranks, as
    /// CommunicationStats counts it). Dispatch rows leave their rank unless the token's own rank owns
    /// one of its experts: per micro-batch Σ_q n_q·(rows per token − P(q owns one)).
    static func collectives(_ job: Job, rowsOf: [Int], hit: [Int: [Double]], rowsPerToken: [Int: Double], lowest: Int) -> [(tag: String, bytes: Double)] {
        let r = job.ranks, c = job.config, d = Double(c.hiddenSize), k = Double(c.expertsPerToken), a = Double(job.accumulation)
        guard r > 1 else { return [] }
        var out: [(String, Double)] = []
        for l in c.moeLayers {
            let off = zip(rowsOf, hit[l]!).reduce(0.0) { $0 + Double($1.0 * job.seqLen) * (rowsPerToken[l]! - $1.1) } * a
            // --recompute runs a trained layer's forward, exchanges included, a second time in backward.
            let forwards = job.recompute && l >= lowest ? 2.0 : 1.0
            out.append(("allToAll layer \(l) forward counts", forwards * a * Double(r * (r - 1) * 8)))
            out.append(("allToAllV layer \(l) forward dispatch", forwards * off * 4 * (d + 2 * k)))
            out.append(("allToAllV layer \(l) forward combine", forwards * off * 4 * d))
            if l >= lowest {
                out.append(("allToAllV layer \(l) backward dispatch", off * 4 * d))
                out.append(("allToAllV layer \(l) backward combine", off * 4 * (d + k)))
            }
        }
        let replicated = c.parameterSpecs().filter { $0.id.routedExpert == nil && job.trainable.contains($0.id) }.reduce(0) { $0 + $1.count }
        out.append(("allReduceSum gradients", Double(r * replicated * 4)))
        for (tag, bytes) in [("allReduceSum grad norm", 8), ("allReduceSum step loss", 16), ("allReduceSum step targets", 8),
                             ("maxAllReduce metrics", 8), ("maxAllReduce stop", 8)] {
            out.append((tag, Double(r * bytes)))
        }
        return out
    }

    public var dispatchBytesPerStep: Double { collectives.filter { $0.tag.hasPrefix("allToAllV") }.reduce(0) { $0 + $1.bytes } }
    public var bytesPerStep: Double { collectives.reduce(0) { $0 + $1.bytes } }
}

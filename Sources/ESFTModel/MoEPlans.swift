import ESFTKernels

/// Source side of expert-parallel dispatch: which rows go to which rank. A token is sent once to each
/// rank owning any of its top-k experts; rows are grouped by destination, in token order within a group.
/// Kept in `DispatchSaved` (backward retraces the same rows).
struct SourcePlan {
    let tokens: Int, k: Int, ranks: Int
    let counts: UnsafeMutablePointer<Int32>      // [send counts (ranks) | receive counts (ranks)]
    let rowToken: UnsafeMutablePointer<Int32>    // send row → token
    let tokenRowStart: UnsafeMutablePointer<Int32>  // token t's rows are tokenRows[start[t]..<start[t+1]]
    let tokenRows: UnsafeMutablePointer<Int32>

    init(_ saved: DispatchSaved, tokens: Int, k: Int, ranks: Int) {
        self.tokens = tokens; self.k = k; self.ranks = ranks
        counts = saved.counts.reuse(count: 2 * ranks)
        rowToken = saved.rowToken.reuse(count: tokens * min(k, ranks))
        tokenRowStart = saved.tokenRowStart.reuse(count: tokens + 1)
        tokenRows = saved.tokenRows.reuse(count: tokens * min(k, ranks))
    }

    var maxRows: Int { tokens * min(k, ranks) }
    var sendCounts: [Int] { (0..<ranks).map { Int(counts[$0]) } }
    var receiveCounts: [Int] { (0..<ranks).map { Int(counts[ranks + $0]) } }
    func store(receiveCounts: [Int]) { for (r, c) in receiveCounts.enumerated() { counts[ranks + r] = Int32(c) } }

    /// Plans the rows; slots_SK[row][j] becomes the local id of the token's j-th expert on that row's
    /// rank, or -1 where another rank owns it. Returns the number of rows S.
    func build(topkIdx: UnsafePointer<Int32>, placement: LayerPlacement, slots: UnsafeMutablePointer<Int32>) -> Int {
        var seen = [Int](repeating: -1, count: ranks), next = [Int](repeating: 0, count: ranks)
        for r in 0..<ranks { counts[r] = 0 }
        for t in 0..<tokens {
            for j in 0..<k {
                let s = placement.owner(of: Int(topkIdx[t * k + j]))
                if seen[s] != t { seen[s] = t; counts[s] += 1 }
            }
        }
        var start = 0
        for r in 0..<ranks { next[r] = start; start += Int(counts[r]) }
        var cursor = 0
        for r in 0..<ranks { seen[r] = -1 }
        for t in 0..<tokens {
            tokenRowStart[t] = Int32(cursor)
            for j in 0..<k {
                let s = placement.owner(of: Int(topkIdx[t * k + j]))
                guard seen[s] != t else { continue }
                seen[s] = t
                let row = next[s]
                next[s] += 1
                rowToken[row] = Int32(t); tokenRows[cursor] = Int32(row); cursor += 1
                for i in 0..<k {
                    let e = Int(topkIdx[t * k + i])
                    slots[row * k + i] = placement.owner(of: e) == s ? Int32(placement.localIndex(of: e)) : -1
                }
            }
        }
        tokenRowStart[tokens] = Int32(cursor)
        return cursor
    }

    /// out[t] (+)= Σ over t's rows of rows[row][0..<dim].
    func sumRowsPerToken(_ rows: UnsafePointer<Float>, width: Int, into out: UnsafeMutablePointer<Float>, dim: Int, accumulate: Bool) {
        parallelChunks(tokens, grain: 16) { range in
            for t in range {
                let o = out + t * dim
                if !accumulate { o.update(repeating: 0, count: dim) }
                for i in Int(self.tokenRowStart[t])..<Int(self.tokenRowStart[t + 1]) {
                    axpy(dim, 1, rows + Int(self.tokenRows[i]) * width, o)
                }
            }
        }
    }

    /// out[t, j] = Σ over t's rows of rows[row][offset + j] (a slot not on that rank carries 0).
    func sumSlotsPerToken(_ rows: UnsafePointer<Float>, width: Int, offset: Int, into out: UnsafeMutablePointer<Float>) {
        for t in 0..<tokens {
            for j in 0..<k { out[t * k + j] = 0 }
            for i in Int(tokenRowStart[t])..<Int(tokenRowStart[t + 1]) {
                let r = rows + Int(tokenRows[i]) * width + offset
                for j in 0..<k { out[t * k + j] += r[j] }
            }
        }
    }

    /// dst[row][0..<dim] = src[token of row], dst rows `stride` floats apart.
    func gatherTokens(_ src: UnsafePointer<Float>, dim: Int, into dst: UnsafeMutablePointer<Float>, stride: Int? = nil) {
        let rows = Int(tokenRowStart[tokens]), ld = stride ?? dim
        parallelChunks(rows, grain: 64) { range in
            for r in range { (dst + r * ld).update(from: src + Int(self.rowToken[r]) * dim, count: dim) }
        }
    }
}

/// Owner side: the (received row, slot) pairs addressed to this rank's experts, grouped per local expert
/// (offsets), with each row's pairs listed for the per-row sums. Kept in `DispatchSaved`.
struct OwnerPlan {
    let rows: Int, k: Int, localExperts: Int
    let offsets: UnsafeMutablePointer<Int32>     // local expert le's assignments: offsets[le]..<offsets[le+1]
    let assignRow: UnsafeMutablePointer<Int32>
    let assignSlot: UnsafeMutablePointer<Int32>
    let weights: UnsafeMutablePointer<Float>
    let rowStart: UnsafeMutablePointer<Int32>     // row j's assignments: rowAssign[rowStart[j]..<rowStart[j+1]]
    let rowAssign: UnsafeMutablePointer<Int32>

    init(_ saved: DispatchSaved, rows: Int, k: Int, localExperts: Int) {
        self.rows = rows; self.k = k; self.localExperts = localExperts
        offsets = saved.offsets.reuse(count: localExperts + 1)
        assignRow = saved.assignRow.reuse(count: rows * k)
        assignSlot = saved.assignSlot.reuse(count: rows * k)
        weights = saved.assignWeight.reuse(count: rows * k)
        rowStart = saved.rowStart.reuse(count: rows + 1)
        rowAssign = saved.rowAssign.reuse(count: rows * k)
    }

    var assignments: Int { Int(offsets[localExperts]) }
    /// The most assignments one local expert has.
    var maxExpertRows: Int {
        var most = 0
        for le in 0..<localExperts { most = max(most, Int(offsets[le + 1] - offsets[le])) }
        return most
    }

    /// Groups the received rows' slots: slots_MK (local expert id or -1, the Int32 side channel) and
    /// each slot's weight at `weights[j * width + s]`.
    func build(slots: UnsafePointer<Int32>, weights rw: UnsafePointer<Float>, width: Int) {
        let m = rows
        offsets.update(repeating: 0, count: localExperts + 1)
        for j in 0..<m {
            for s in 0..<k {
                let id = Int(slots[j * k + s])
                if id >= 0 { offsets[id + 1] += 1 }
            }
        }
        for le in 0..<localExperts { offsets[le + 1] += offsets[le] }
        var next = Array(UnsafeBufferPointer(start: offsets, count: localExperts))
        rowStart.update(repeating: 0, count: m + 1)
        for j in 0..<m {
            for s in 0..<k {
                let id = Int(slots[j * k + s])
                guard id >= 0 else { continue }
                let a = Int(next[id])
                next[id] += 1
                assignRow[a] = Int32(j); assignSlot[a] = Int32(s); weights[a] = rw[j * width + s]
                rowStart[j + 1] += 1
            }
        }
        for j in 0..<m { rowStart[j + 1] += rowStart[j] }
        var fill = Array(UnsafeBufferPointer(start: rowStart, count: m))
        for a in 0..<assignments {
            let j = Int(assignRow[a])
            rowAssign[Int(fill[j])] = Int32(a)
            fill[j] += 1
        }
    }

    /// dst[a] = src[row of a][0..<dim].
    func gather(from src: UnsafePointer<Float>, stride: Int, into dst: UnsafeMutablePointer<Float>, dim: Int) {
        parallelChunks(assignments, grain: 64) { range in
            for a in range { (dst + a * dim).update(from: src + Int(self.assignRow[a]) * stride, count: dim) }
        }
    }

    /// ret[j] = Σ over row j's assignments of weight·y.
    func combine(_ y: UnsafePointer<Float>, weights w: UnsafePointer<Float>, into ret: UnsafeMutablePointer<Float>, dim: Int) {
        parallelChunks(rows, grain: 16) { range in
            for j in range {
                let o = ret + j * dim
                o.update(repeating: 0, count: dim)
                for i in Int(self.rowStart[j])..<Int(self.rowStart[j + 1]) {
                    let a = Int(self.rowAssign[i])
                    axpy(dim, w[a], y + a * dim, o)
                }
            }
        }
    }

    /// dret[j] = [Σ dx of row j's assignments | ∂L/∂w in each assignment's slot, 0 elsewhere].
    func combineBackward(_ dx: UnsafePointer<Float>, dWeights: UnsafePointer<Float>, into dret: UnsafeMutablePointer<Float>,
                         dim: Int, k: Int) {
        let width = dim + k
        parallelChunks(rows, grain: 16) { range in
            for j in range {
                let o = dret + j * width
                o.update(repeating: 0, count: width)
                for i in Int(self.rowStart[j])..<Int(self.rowStart[j + 1]) {
                    let a = Int(self.rowAssign[i])
                    axpy(dim, 1, dx + a * dim, o)
                    o[dim + Int(self.assignSlot[a])] = dWeights[a]
                }
            }
        }
    }
}

/// What dispatch keeps from forward for backward: both plans, the received rows (the experts' inputs)
/// and the experts' pre-activations. S rows sent, M received, W = D+K floats a dispatched row, A the
/// (row, slot) assignments to local experts.
final class DispatchSaved: ReusableGroup {
    // source plan
    let counts = Reusable<Int32>(), rowToken = Reusable<Int32>(), tokenRowStart = Reusable<Int32>(), tokenRows = Reusable<Int32>()
    // owner plan
    let offsets = Reusable<Int32>(), assignRow = Reusable<Int32>(), assignSlot = Reusable<Int32>()
    let assignWeight = Reusable<Float>(), rowStart = Reusable<Int32>(), rowAssign = Reusable<Int32>()
    let received_MW = Reusable<Float>()
    let experts = SwiGLUSaved()  // A rows, grouped per local expert
}

/// Dispatch temporaries: rows packed to send, gathered per expert, returned; and their gradients.
final class DispatchScratch: ReusableGroup {
    let send_SW = Reusable<Float>(), sendSlots_SK = Reusable<Int32>(), receivedSlots_MK = Reusable<Int32>()
    let gathered_AD = Reusable<Float>(), expertOut_AD = Reusable<Float>()
    let combined_MD = Reusable<Float>(), returned_SD = Reusable<Float>()
    let dSend_SD = Reusable<Float>(), dReceived_MD = Reusable<Float>(), dExpertOut_AD = Reusable<Float>()
    let dGathered_AD = Reusable<Float>(), dWeight_A = Reusable<Float>()
    let dCombined_MW = Reusable<Float>(), dReturned_SW = Reusable<Float>()  // W = D+K here: [∂x | ∂weight per slot]
}

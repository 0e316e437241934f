import ESFTKernels
import ESFTParallel
import Foundation

/// The all-to-all-v checks, the counters check and the bandwidth measurement of `esft mpi-check`.
extension MPICheckSuite {
    static let unevenTag = "mpi-check uneven rows"

    /// Sends `rows(rank, s)` rows to every rank s and checks every row received. With `gap`, segments
    /// are spaced one row apart on both sides, so displacements must be honoured and the gaps stay untouched.
    func exchange(rows: (Int, Int) -> Int, gap: Bool, tag: String) throws -> [String] {
        let w = width, g = gap ? w : 0
        func layout(_ r: [Int]) -> (counts: [Int], displacements: [Int], total: Int) {
            var d: [Int] = [], run = 0
            for c in r { d.append(run); run += c * w + g }
            return (r.map { $0 * w }, d, run)
        }
        let out = layout((0..<size).map { rows(rank, $0) }), into = layout((0..<size).map { rows($0, rank) })
        var send = [Float](repeating: -2, count: out.total)
        for s in 0..<size {
            for row in 0..<rows(rank, s) {
                for col in 0..<w { send[out.displacements[s] + row * w + col] = rowValue(from: rank, to: s, row: row, col: col) }
            }
        }
        var receive = [Float](repeating: -1, count: into.total)
        try comm.allToAllV(send: send, sendCounts: out.counts, sendDisplacements: out.displacements,
                           receive: &receive, receiveCounts: into.counts, receiveDisplacements: into.displacements, tag: tag)
        var expected = [Float](repeating: -1, count: into.total)
        for src in 0..<size {
            for row in 0..<rows(src, rank) {
                for col in 0..<w { expected[into.displacements[src] + row * w + col] = rowValue(from: src, to: rank, row: row, col: col) }
            }
        }
        return compare(receive, expected, "received")
    }

    func unevenAllToAllV() throws {
        try check("allToAllV uneven rows") {
            (try exchange(rows: { r, s in r * s + 1 }, gap: true, tag: Self.unevenTag),
             "rank r sends r·s+1 rows of \(width) floats to rank s, gapped displacements")
        }
    }

    /// The classic MoE hang: a rank with nothing to send must still enter the collective.
    func zeroCountAllToAllV() throws {
        let silent = size - 1
        try check("allToAllV zero counts") {
            (try exchange(rows: { r, s in r == silent || s == silent || (s == 0 && r != 0) ? 0 : r + s + 1 },
                          gap: false, tag: "mpi-check zero rows"),
             "rank \(silent) sends and receives nothing (empty buffers); rank 0 receives only from itself")
        }
    }

    func rowExchange() throws {
        try check("exchangeRows (allToAll + allToAllV)") {
            let w = width
            let rowsTo = (0..<size).map { (rank + 2 * $0) % 3 }
            var send: [Float] = []
            for s in 0..<size { for row in 0..<rowsTo[s] { for col in 0..<w { send.append(rowValue(from: rank, to: s, row: row, col: col)) } } }
            let got = try send.withUnsafeBufferPointer { try CommunicatorExchange(comm).exchangeRows($0, rowsTo: rowsTo, width: w, tag: "mpi-check exchange") }
            let rowsFrom = (0..<size).map { ($0 + 2 * rank) % 3 }
            var expected: [Float] = []
            for src in 0..<size { for row in 0..<rowsFrom[src] { for col in 0..<w { expected.append(rowValue(from: src, to: rank, row: row, col: col)) } } }
            var problems = compare(got.rowsFrom, rowsFrom, "rowsFrom")
            problems += compare(got.values, expected, "rows")
            return (problems, "counts first, then rows; rank r sends (r+2s) mod 3 rows to rank s")
        }
    }

    func maxReduce() throws {
        try check("maxAllReduce Double") {
            let got = try comm.maxAllReduce(Double(rank) * 1.5 - 7, tag: "mpi-check")
            let expected = Double(size - 1) * 1.5 - 7
            return (got == expected ? [] : ["got \(got), expected \(expected)"], "")
        }
    }

    /// Bad arguments fail on the calling rank before any message moves, identically on every rank.
    func argumentChecks() throws {
        try check("argument checks") {
            var problems: [String] = []
            func expectError(_ what: String, _ needle: String, _ body: () throws -> Void) {
                do { try body(); problems.append("\(what) was accepted") } catch let e as ESFTError {
                    if !e.message.contains(needle) { problems.append("\(what): unexpected message '\(e.message)'") }
                } catch { problems.append("\(what): unexpected error \(error)") }
            }
            var one: [Float] = [0], none: [Float] = []
            expectError("allToAllV with \(size + 1) send counts", "one per rank") {
                try comm.allToAllV(send: none, sendCounts: [Int](repeating: 0, count: size + 1), sendDisplacements: [Int](repeating: 0, count: size + 1),
                                   receive: &one, receiveCounts: [Int](repeating: 0, count: size), receiveDisplacements: [Int](repeating: 0, count: size),
                                   tag: "mpi-check bad")
            }
            expectError("allToAllV past the end of the send buffer", "exceeds") {
                try comm.allToAllV(send: none, sendCounts: [Int](repeating: 1, count: size), sendDisplacements: [Int](repeating: 0, count: size),
                                   receive: &one, receiveCounts: [Int](repeating: 0, count: size), receiveDisplacements: [Int](repeating: 0, count: size),
                                   tag: "mpi-check bad")
            }
            expectError("reduceSum to rank \(size)", "not a rank") { try comm.reduceSum(&one, toRoot: size, tag: "mpi-check bad") }
            expectError("allToAll with \(size + 1) values", "one per rank") { _ = try comm.allToAll([Int32](repeating: 0, count: size + 1), tag: "mpi-check bad") }
            return (problems, "rejected before any message moves")
        }
    }

    /// The uneven exchange's counters must equal what its counts imply, and the JSON must round-trip.
    func counters() throws {
        try check("counters") {
            var problems: [String] = []
            let c = comm.stats["allToAllV", tag: Self.unevenTag]
            let rowBytes = Int64(width * MemoryLayout<Float>.stride)
            let others = (0..<size).filter { $0 != rank }
            let sent = others.reduce(Int64(0)) { $0 + Int64(rank * $1 + 1) * rowBytes }
            let received = others.reduce(Int64(0)) { $0 + Int64($1 * rank + 1) * rowBytes }
            let local = Int64(rank * rank + 1) * rowBytes
            if c.calls != 1 { problems.append("uneven allToAllV counted \(c.calls) calls, expected 1") }
            if (c.bytesSent, c.bytesReceived, c.bytesLocal) != (sent, received, local) {
                problems.append("uneven allToAllV bytes sent/received/local \(c.bytesSent)/\(c.bytesReceived)/\(c.bytesLocal), expected \(sent)/\(received)/\(local)")
            }
            if comm.stats["allToAll", tag: "mpi-check exchange"].calls != 1 { problems.append("exchangeRows' count exchange not counted once") }
            if !comm.stats.counters.keys.filter({ $0.tag == "mpi-check bad" }).isEmpty { problems.append("rejected calls were counted") }
            let summary = comm.statsSummary()
            let decoded = try JSONDecoder().decode(CommunicationSummary.self, from: summary.jsonData())
            if decoded != summary { problems.append("the JSON summary does not round-trip") }
            return (problems, "uneven allToAllV: \(sent) B sent, \(received) B received, \(local) B local on rank \(rank)")
        }
    }

    /// Provokes an error inside MPI: rank `bad` expects one row fewer from the next rank than it is sent.
    func truncatedReceive(on bad: Int) throws {
        let w = width, from = (bad + 1) % size
        let send = [Float](repeating: 1, count: 2 * w * size)
        let counts = [Int](repeating: 2 * w, count: size)
        var receiveCounts = counts
        if rank == bad { receiveCounts[from] = w }
        var receive = [Float](repeating: 0, count: 2 * w * size)
        try comm.allToAllV(send: send, sendCounts: counts, sendDisplacements: packedDisplacements(counts), receive: &receive,
                           receiveCounts: receiveCounts, receiveDisplacements: packedDisplacements(counts), tag: "mpi-check truncated")
        // The other ranks carry on into the next collective, where MPI_Abort from rank `bad` ends them.
        if rank == bad { throw ESFTError("mpi-check: --fail-in-mpi \(bad): MPI did not report the truncated receive") }
    }

    /// A larger even all-to-all-v, timed: each repetition's time is the slowest rank's.
    func bandwidth() throws {
        let perDest = max(1, options.sizeMiB * (1 << 20) / MemoryLayout<Float>.stride / size)
        let counts = [Int](repeating: perDest, count: size)
        let displacements = (0..<size).map { $0 * perDest }
        func value(_ src: Int, _ dst: Int, _ i: Int) -> Float { Float((src * 131 + dst * 31 + i) % 8191) }
        var send = [Float](repeating: 0, count: perDest * size)
        for s in 0..<size { for i in 0..<perDest { send[s * perDest + i] = value(rank, s, i) } }
        var receive = [Float](repeating: 0, count: perDest * size)
        let tag = "mpi-check bandwidth"
        var times: [Double] = []
        for iteration in 0...options.repeats {   // iteration 0 warms up (page faults, connection setup)
            try comm.barrier(tag: "mpi-check timing")
            let start = Date()
            try comm.allToAllV(send: send, sendCounts: counts, sendDisplacements: displacements,
                               receive: &receive, receiveCounts: counts, receiveDisplacements: displacements, tag: tag)
            let slowest = try comm.maxAllReduce(Date().timeIntervalSince(start), tag: "mpi-check timing")
            if iteration > 0 { times.append(slowest) }
        }
        try check("allToAllV bandwidth") {
            var problems: [String] = []
            outer: for s in 0..<size {
                for i in 0..<perDest where receive[s * perDest + i] != value(s, rank, i) {
                    problems.append("element \(i) from rank \(s) is \(receive[s * perDest + i]), expected \(value(s, rank, i))")
                    break outer
                }
            }
            let best = times.min()!, mean = times.reduce(0, +) / Double(times.count)
            let mib = Double(perDest * size * MemoryLayout<Float>.stride) / 1048576
            let offRank = Double(perDest * (size - 1) * MemoryLayout<Float>.stride)
            var detail = String(format: "%.1f MiB per rank, best %.2f ms, mean %.2f ms of %d", mib, best * 1e3, mean * 1e3, times.count)
            if size > 1 {
                detail += String(format: "; %.1f MiB to other ranks: %.2f GB/s per rank, %.2f GB/s total",
                                 offRank / 1048576, offRank / best / 1e9, offRank * Double(size) / best / 1e9)
            } else {
                detail += String(format: "; 1 rank, local copy only: %.2f GB/s", mib * 1048576 / best / 1e9)
            }
            return (problems, detail)
        }
    }
}

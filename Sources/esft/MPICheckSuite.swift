import ESFTKernels
import ESFTParallel
import Foundation

/// The checks behind `esft mpi-check`. Every check uses rank-dependent data whose result each rank
/// can compute on its own, so every rank verifies exactly (integers, and floats that are exact).
/// A check returns this rank's problems; the verdict of all ranks is gathered and printed by rank 0.
final class MPICheckSuite {
    let comm: Communicator
    let options: MPICheckCommand.Options
    private(set) var checks = 0, failed = 0
    var rank: Int { comm.rank }
    var size: Int { comm.size }
    /// Floats per row in the row exchanges: odd, so row boundaries are not accidentally aligned.
    let width = 5

    init(comm: Communicator, options: MPICheckCommand.Options) {
        self.comm = comm
        self.options = options
    }

    /// rank 0 prints; stdout is flushed at once so a hang shows which check it is in.
    func say(_ line: String) {
        guard rank == 0 else { return }
        print(line.replacingOccurrences(of: " +$", with: "", options: .regularExpression))
        fflush(stdout)
    }

    /// Runs a check on every rank; every rank learns which ranks failed. `body` returns problems and a detail.
    func check(_ name: String, _ body: () throws -> (problems: [String], detail: String)) throws {
        let (problems, detail) = try body()
        for p in problems.prefix(5) {
            FileHandle.standardError.write("esft mpi-check: rank \(rank): \(name): \(p)\n".data(using: .utf8)!)
        }
        let verdicts = try comm.allGather(Int64(problems.isEmpty ? 0 : 1), tag: "mpi-check verdict")
        let bad = verdicts.indices.filter { verdicts[$0] != 0 }
        checks += 1
        if !bad.isEmpty { failed += 1 }
        let status = bad.isEmpty ? "PASS" : "FAIL"
        let ranks = bad.isEmpty ? "" : "  (failed on rank\(bad.count == 1 ? "" : "s") \(bad.map(String.init).joined(separator: ", ")); details on stderr)"
        say("\(status)  \(name.padding(toLength: 38, withPad: " ", startingAt: 0))\(detail)\(ranks)")
    }

    /// Compares element by element; reports the first few differences.
    func compare<T: Equatable>(_ got: [T], _ expected: [T], _ what: String) -> [String] {
        guard got.count == expected.count else { return ["\(what): \(got.count) elements, expected \(expected.count)"] }
        return got.indices.lazy.filter { got[$0] != expected[$0] }.prefix(3)
            .map { "\(what)[\($0)] is \(got[$0]), expected \(expected[$0])" }
    }

    /// A row value that identifies source, destination and position; exact in Float (< 2^24).
    func rowValue(from src: Int, to dst: Int, row: Int, col: Int) -> Float {
        Float(((src * 1009 + dst) * 8191 + row * width + col) % 16_777_213)
    }

    // MARK: - the checks, in the order they run

    func runAll() throws {
        try barrier()
        try placement()
        try broadcastStrings()
        try broadcastBytes()
        try broadcastJSON()
        try allReduce()
        try reduceToRoot()
        try gatherAndCounts()
        try unevenAllToAllV()
        try zeroCountAllToAllV()
        try rowExchange()
        try maxReduce()
        try argumentChecks()
        try counters()
        if options.sizeMiB > 0 { try bandwidth() }
    }

    func barrier() throws {
        try check("barrier") {
            try comm.barrier(tag: "mpi-check")
            return ([], "")
        }
    }

    func broadcastStrings() throws {
        try check("broadcast String from every rank") {
            var problems: [String] = []
            for root in 0..<size {
                let expected = "hello from rank \(root) ✓"
                let got = try comm.broadcast(rank == root ? expected : "", from: root, tag: "mpi-check")
                if got != expected { problems.append("from rank \(root): '\(got)'") }
            }
            return (problems, "")
        }
    }

    func broadcastBytes() throws {
        try check("broadcast Data from every rank") {
            var problems: [String] = []
            var longest = 0
            for root in 0..<size {
                let n = root == 0 ? 0 : root * 1000 + 37   // rank 0 sends 0 bytes
                let expected = Data((0..<n).map { UInt8(truncatingIfNeeded: $0 * 7 + root) })
                let mine = rank == root ? expected : Data([1, 2, 3])
                let got = try comm.broadcast(mine, from: root, tag: "mpi-check")
                if got != expected { problems.append("from rank \(root): \(got.count) bytes, expected \(expected.count) (or different content)") }
                longest = max(longest, expected.count)
            }
            return (problems, "0 to \(longest) bytes")
        }
    }

    struct Payload: Codable, Equatable {
        var name: String
        var values: [Double]
        var experts: [String: [Int]]
    }

    func broadcastJSON() throws {
        let root = size - 1
        let expected = Payload(name: "from rank \(root) — ünïcode", values: [1.5, -2.25, 1e-300],
                               experts: ["1": [8, 26, 55], "2": [root]])
        try check("broadcast JSON (Codable)") {
            let got: Payload = try comm.broadcast(json: rank == root ? expected : nil, from: root, tag: "mpi-check")
            return (got == expected ? [] : ["got \(got)"], "from rank \(root)")
        }
    }

    func allReduce() throws {
        let n = size, tri = n * (n + 1) / 2
        try check("allReduceSum Float") {
            var a = (0..<4099).map { Float((rank + 1) * ($0 % 13)) }
            try comm.allReduceSum(&a, tag: "mpi-check")
            var problems = compare(a, (0..<4099).map { Float(tri * ($0 % 13)) }, "array")
            let count = 1 << 16
            let p = UnsafeMutablePointer<Float>.allocate(capacity: count)
            defer { p.deallocate() }
            for i in 0..<count { p[i] = Float(rank - i % 3) }
            try comm.allReduceSum(p, count: count, tag: "mpi-check")
            problems += compare(Array(UnsafeBufferPointer(start: p, count: count)),
                                (0..<count).map { Float(n * (n - 1) / 2 - n * ($0 % 3)) }, "pointer")
            return (problems, "4099 (array) and 65536 (pointer) elements")
        }
        try check("allReduceSum Double") {
            var a = (0..<1000).map { Double(rank) * 0.25 + Double($0) }
            try comm.allReduceSum(&a, tag: "mpi-check")
            return (compare(a, (0..<1000).map { Double(n * $0) + 0.25 * Double(n * (n - 1) / 2) }, "array"), "1000 elements")
        }
        try check("allReduceSum Int64") {
            var a = (0..<1000).map { (Int64(rank + 1) << 40) + Int64($0) }
            try comm.allReduceSum(&a, tag: "mpi-check")
            var problems = compare(a, (0..<1000).map { (Int64(tri) << 40) + Int64(n * $0) }, "array")
            let s: Int64 = try comm.allReduceSum(Int64(rank + 1), tag: "mpi-check")
            if s != Int64(tri) { problems.append("scalar sum \(s), expected \(tri)") }
            return (problems, "1000 elements above 2^40, and a scalar")
        }
    }

    func reduceToRoot() throws {
        let n = size
        try check("reduceSum Double, Int64") {
            var problems: [String] = []
            for root in Set([0, n - 1]).sorted() {
                let d0 = (0..<777).map { Double(rank) * 0.5 - Double($0) }
                var d = d0
                try comm.reduceSum(&d, toRoot: root, tag: "mpi-check")
                let dSum = (0..<777).map { 0.5 * Double(n * (n - 1) / 2) - Double(n * $0) }
                problems += compare(d, rank == root ? dSum : d0, "Double to rank \(root)")
                let i0 = (0..<777).map { Int64(rank) * 1_000_000_000_000 - Int64($0) }
                var i = i0
                try comm.reduceSum(&i, toRoot: root, tag: "mpi-check")
                let iSum = (0..<777).map { Int64(n * (n - 1) / 2) * 1_000_000_000_000 - Int64(n * $0) }
                problems += compare(i, rank == root ? iSum : i0, "Int64 to rank \(root)")
            }
            return (problems, "to rank\(n == 1 ? " 0" : "s 0 and \(n - 1)"); others' buffers unchanged")
        }
    }

    func gatherAndCounts() throws {
        try check("allGather Int64") {
            let got = try comm.allGather(Int64(rank) * 1_000_000_007 + 3, tag: "mpi-check")
            return (compare(got, (0..<size).map { Int64($0) * 1_000_000_007 + 3 }, "gathered"), "")
        }
        try check("allToAll Int32, Int64 counts") {
            let c32 = try comm.allToAll((0..<size).map { Int32(rank * $0 + 1) }, tag: "mpi-check")
            var problems = compare(c32, (0..<size).map { Int32($0 * rank + 1) }, "Int32")
            let c64 = try comm.allToAll((0..<size).map { (Int64(rank) << 33) + Int64($0) }, tag: "mpi-check")
            problems += compare(c64, (0..<size).map { (Int64($0) << 33) + Int64(rank) }, "Int64")
            return (problems, "")
        }
    }
}

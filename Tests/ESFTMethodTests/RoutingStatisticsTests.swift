import ESFTKernels
import ESFTMethod
import XCTest

final class RoutingStatisticsTests: XCTestCase {
    /// E = 4, K = 2, one layer (1). Sample 0: tokens 0, 1; sample 1: token 2; token 3 is padding.
    let ids: [Int32] = [0, 1, 0, 2, 3, 1, 2, 3]
    let probs: [Double] = [0.5, 0.3, 0.6, 0.2, 0.7, 0.1, 0.9, 0.05]
    let sampleOfToken: [Int32] = [0, 0, 1, -1]

    func accumulated() throws -> RoutingStatistics {
        var s = try RoutingStatistics(layers: [1], experts: 4, topK: 2)
        let grouping = try TokenGrouping(sampleOfToken: sampleOfToken)
        try ids.withUnsafeBufferPointer { i in
            try probs.withUnsafeBufferPointer { p in try s.add(layer: 1, ids: i, probs: p, grouping: grouping) }
        }
        return s
    }

    func testPooledOverTokens() throws {
        let scores = try RelevanceScores(statistics: accumulated(), normalize: .tokens, source: "test")
        // N_tok = 3 (padding never counts). gate: Σ_t g / 3; token: count / K / 3.
        assertClose(scores.gate[1]!, [1.1 / 3, 0.4 / 3, 0.2 / 3, 0.7 / 3])
        assertClose(scores.token[1]!, [2.0 / 6, 2.0 / 6, 1.0 / 6, 1.0 / 6])
        XCTAssertEqual(scores.metadata.tokens, 3)
        XCTAssertEqual(scores.metadata.samples, 2)
    }

    func testNormalisedPerSample() throws {
        let scores = try RelevanceScores(statistics: accumulated(), normalize: .samples, source: "test")
        // Sample 0 (L = 2): gate (0.55, 0.15, 0.1, 0), token (0.5, 0.25, 0.25, 0).
        // Sample 1 (L = 1): gate (0, 0.1, 0, 0.7), token (0, 0.5, 0, 0.5). Mean over N_s = 2.
        assertClose(scores.gate[1]!, [0.275, 0.125, 0.05, 0.35])
        assertClose(scores.token[1]!, [0.25, 0.375, 0.125, 0.25])
        XCTAssertEqual(scores.token[1]!.reduce(0, +), 1, accuracy: 1e-15, "token ratios sum to 1 per layer")
    }

    func testFloatProbabilitiesAndCountedMask() throws {
        var s = try RoutingStatistics(layers: [1], experts: 4, topK: 2)
        // Same data, padding marked through `counted` instead of a negative sample id.
        let grouping = try TokenGrouping(sampleOfToken: [0, 0, 1, 1], counted: [true, true, true, false])
        let floats = probs.map(Float.init)
        try ids.withUnsafeBufferPointer { i in
            try floats.withUnsafeBufferPointer { p in try s.add(layer: 1, ids: i, probs: p, grouping: grouping) }
        }
        let scores = try RelevanceScores(statistics: s, normalize: .samples, source: "test")
        assertClose(scores.gate[1]!, [0.275, 0.125, 0.05, 0.35], tolerance: 1e-7)
        XCTAssertEqual(s.selectionCount, [2, 2, 1, 1])
        XCTAssertEqual(s.tokenCount, [3])
        XCTAssertEqual(s.sampleCount, [2])
    }

    func testMergeEqualsOneAccumulatorOverAllData() throws {
        let layers = [1, 2, 3], e = 16, k = 4
        var rng = SplitMix(seed: 42)
        var batches: [([Int32], [Double], TokenGrouping)] = []
        for _ in 0..<12 {
            let tokens = 40 + Int(rng.next() % 40)
            var ids: [Int32] = [], probs: [Double] = [], samples: [Int32] = []
            for t in 0..<tokens {
                var chosen = Set<Int32>()
                while chosen.count < k { chosen.insert(Int32(rng.next() % UInt64(e))) }
                ids += chosen.sorted(); probs += (0..<k).map { _ in rng.unit() * 0.3 }
                samples.append(rng.next() % 10 == 0 ? -1 : Int32(t / 13))
            }
            batches.append((ids, probs, try TokenGrouping(sampleOfToken: samples)))
        }
        func run(_ subset: ArraySlice<([Int32], [Double], TokenGrouping)>) throws -> RoutingStatistics {
            var s = try RoutingStatistics(layers: layers, experts: e, topK: k)
            for (ids, probs, g) in subset {
                for layer in layers {
                    try ids.withUnsafeBufferPointer { i in
                        try probs.withUnsafeBufferPointer { p in try s.add(layer: layer, ids: i, probs: p, grouping: g) }
                    }
                }
            }
            return s
        }
        let all = try run(batches[...])
        var merged = try run(batches[0..<5])
        try merged.merge(run(batches[5...]))
        XCTAssertEqual(merged.integerState, all.integerState, "integer counts are exact whatever the order")
        assertRelativelyClose(merged.doubleState, all.doubleState, 1e-12)

        // What rank 0 does after MPI_Reduce(SUM) of three ranks' flat state.
        let parts = try [batches[0..<3], batches[3..<9], batches[9...]].map(run)
        let doubles = parts.map(\.doubleState).reduce([Double](repeating: 0, count: all.doubleState.count)) { zip($0, $1).map(+) }
        let ints = parts.map(\.integerState).reduce([Int64](repeating: 0, count: all.integerState.count)) { zip($0, $1).map(+) }
        let reduced = try RoutingStatistics(layers: layers, experts: e, topK: k, doubleState: doubles, integerState: ints)
        XCTAssertEqual(reduced.integerState, all.integerState)
        assertRelativelyClose(reduced.doubleState, all.doubleState, 1e-12)
        let a = try RelevanceScores(statistics: reduced, normalize: .samples, source: "t")
        let b = try RelevanceScores(statistics: all, normalize: .samples, source: "t")
        for l in layers { assertRelativelyClose(a.gate[l]!, b.gate[l]!, 1e-12); assertRelativelyClose(a.token[l]!, b.token[l]!, 1e-12) }
    }

    func testBadInputs() throws {
        var s = try RoutingStatistics(layers: [1, 2], experts: 4, topK: 2)
        let g = TokenGrouping.oneSample(tokens: 1)
        let bad: [Int32] = [0, 4], p: [Double] = [0.5, 0.5]
        XCTAssertESFTError(try bad.withUnsafeBufferPointer { i in
            try p.withUnsafeBufferPointer { try s.add(layer: 1, ids: i, probs: $0, grouping: g) }
        }, "expert id 4", "0..<4")
        let good: [Int32] = [0, 1]
        XCTAssertESFTError(try good.withUnsafeBufferPointer { i in
            try p.withUnsafeBufferPointer { try s.add(layer: 0, ids: i, probs: $0, grouping: g) }
        }, "layer 0 is not an MoE layer")
        XCTAssertESFTError(try RoutingStatistics(layers: [1], experts: 4, topK: 2, doubleState: [0], integerState: []),
                           "flat state")
        XCTAssertESFTError(try s.merge(RoutingStatistics(layers: [1], experts: 4, topK: 2)), "cannot merge")
        XCTAssertESFTError(try RelevanceScores(statistics: s, normalize: .tokens, source: "empty"), "empty: no counted tokens")
        XCTAssertESFTError(try RoutingStatistics(layers: [1], experts: 4, topK: 5), "top-k 5")
    }
}

/// A small deterministic generator (SplitMix64) so tests need no seeds from the system.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func unit() -> Double { Double(next() >> 11) / Double(1 << 53) }
}

func assertClose(_ a: [Double], _ b: [Double], tolerance: Double = 1e-12, file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(a.count, b.count, file: file, line: line)
    for (i, (x, y)) in zip(a, b).enumerated() where abs(x - y) > tolerance {
        XCTFail("[\(i)]: \(x) vs \(y)", file: file, line: line)
    }
}

func assertRelativelyClose(_ a: [Double], _ b: [Double], _ rel: Double, file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(a.count, b.count, file: file, line: line)
    for (i, (x, y)) in zip(a, b).enumerated() where abs(x - y) > rel * max(abs(x), abs(y)) {
        XCTFail("[\(i)]: \(x) vs \(y) differ by more than \(rel) relative", file: file, line: line)
    }
}

import Dispatch
import Foundation

/// Calls, payload bytes and wall time per (collective, tag), as seen by one rank.
///
/// Bytes are payload, not wire traffic: what this rank hands to other ranks (`bytesSent`), what it
/// gets from them (`bytesReceived`), and what stays on the rank (`bytesLocal`, e.g. the all-to-all-v
/// rows a rank sends itself). MPI's algorithm choice changes wire bytes; payload is what the program
/// asked to move, so it is comparable across MPI libraries and rank counts. A single-process
/// communicator moves nothing: it counts calls and local bytes only.
///
/// `seconds` is wall time inside the call, including waiting for the slowest rank to arrive.
public struct CommunicationStats: Equatable, Sendable {
    public struct Key: Hashable, Comparable, Sendable {
        public let collective: String
        public let tag: String?
        public init(collective: String, tag: String?) { self.collective = collective; self.tag = tag }
        public static func < (a: Key, b: Key) -> Bool {
            (a.collective, a.tag ?? "") < (b.collective, b.tag ?? "")
        }
    }

    public struct Counter: Equatable, Codable, Sendable {
        public var calls = 0
        public var bytesSent: Int64 = 0
        public var bytesReceived: Int64 = 0
        public var bytesLocal: Int64 = 0
        public var seconds = 0.0
        public init() {}

        public mutating func add(_ o: Counter) {
            calls += o.calls; bytesSent += o.bytesSent; bytesReceived += o.bytesReceived
            bytesLocal += o.bytesLocal; seconds += o.seconds
        }

        enum CodingKeys: String, CodingKey {
            case calls, seconds
            case bytesSent = "bytes_sent", bytesReceived = "bytes_received", bytesLocal = "bytes_local"
        }
    }

    public private(set) var counters: [Key: Counter] = [:]

    public init() {}

    public var isEmpty: Bool { counters.isEmpty }

    public mutating func record(_ collective: String, tag: String?, sent: Int, received: Int, local: Int, seconds: Double) {
        var c = Counter()
        c.calls = 1; c.bytesSent = Int64(sent); c.bytesReceived = Int64(received); c.bytesLocal = Int64(local); c.seconds = seconds
        counters[Key(collective: collective, tag: tag), default: Counter()].add(c)
    }

    /// The counter for one collective and tag (zero when never called).
    public subscript(collective: String, tag tag: String? = nil) -> Counter {
        counters[Key(collective: collective, tag: tag)] ?? Counter()
    }

    /// All tags of one collective, or everything when `collective` is nil.
    public func total(collective: String? = nil) -> Counter {
        var t = Counter()
        for (k, c) in counters where collective == nil || k.collective == collective { t.add(c) }
        return t
    }

    /// Adds another snapshot, e.g. to accumulate per-step snapshots over a run.
    public mutating func merge(_ other: CommunicationStats) {
        for (k, c) in other.counters { counters[k, default: Counter()].add(c) }
    }

    public func summary(rank: Int? = nil, size: Int? = nil) -> CommunicationSummary {
        CommunicationSummary(rank: rank, size: size, total: total(),
                             collectives: counters.sorted { $0.key < $1.key }.map { CommunicationSummary.Row(key: $0.key, counter: $0.value) })
    }
}

/// The JSON form of `CommunicationStats`: a total and one row per (collective, tag), sorted.
public struct CommunicationSummary: Codable, Equatable, Sendable {
    public struct Row: Codable, Equatable, Sendable {
        public let collective: String
        public let tag: String?
        public let calls: Int
        public let bytesSent: Int64
        public let bytesReceived: Int64
        public let bytesLocal: Int64
        public let seconds: Double

        init(key: CommunicationStats.Key, counter c: CommunicationStats.Counter) {
            collective = key.collective; tag = key.tag; calls = c.calls
            bytesSent = c.bytesSent; bytesReceived = c.bytesReceived; bytesLocal = c.bytesLocal; seconds = c.seconds
        }

        enum CodingKeys: String, CodingKey {
            case collective, tag, calls, seconds
            case bytesSent = "bytes_sent", bytesReceived = "bytes_received", bytesLocal = "bytes_local"
        }
    }

    public let rank: Int?
    public let size: Int?
    public let total: CommunicationStats.Counter
    public let collectives: [Row]

    /// Pretty, key-sorted JSON so diffs between runs stay readable.
    public func jsonData() throws -> Data {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys]
        return try e.encode(self)
    }
}

/// Monotonic wall time for the counters (immune to clock changes during a long run).
enum Stopwatch {
    static func now() -> UInt64 { DispatchTime.now().uptimeNanoseconds }
    static func seconds(since start: UInt64) -> Double { Double(now() &- start) * 1e-9 }
}

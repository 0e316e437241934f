import ESFTBase
import Foundation

/// Array, pointer, untagged and scalar forms of the protocol's collectives.
public extension Communicator {
    /// Counters so far, then zero: one call per training step gives that step's traffic.
    func takeStats() -> CommunicationStats {
        let s = stats
        resetStats()
        return s
    }

    func statsSummary() -> CommunicationSummary { stats.summary(rank: rank, size: size) }

    func barrier() throws { try barrier(tag: nil) }

    func allReduceSum<T: CollectiveElement>(_ values: inout [T], tag: String? = nil) throws {
        try values.withUnsafeMutableBufferPointer { try allReduceSum($0, tag: tag) }
    }

    func allReduceSum<T: CollectiveElement>(_ pointer: UnsafeMutablePointer<T>, count: Int, tag: String? = nil) throws {
        try allReduceSum(UnsafeMutableBufferPointer(start: pointer, count: count), tag: tag)
    }

    func allReduceSum<T: CollectiveElement>(_ buffer: UnsafeMutableBufferPointer<T>) throws {
        try allReduceSum(buffer, tag: nil)
    }

    /// One scalar summed over ranks (e.g. a global token count).
    func allReduceSum<T: CollectiveElement>(_ value: T, tag: String? = nil) throws -> T {
        var v = [value]
        try allReduceSum(&v, tag: tag)
        return v[0]
    }

    func reduceSum<T: CollectiveElement>(_ values: inout [T], toRoot root: Int, tag: String? = nil) throws {
        try values.withUnsafeMutableBufferPointer { try reduceSum($0, toRoot: root, tag: tag) }
    }

    func broadcast<T: CollectiveElement>(_ values: inout [T], from root: Int, tag: String? = nil) throws {
        try values.withUnsafeMutableBufferPointer { try broadcast($0, from: root, tag: tag) }
    }

    /// Root's bytes on every rank, whatever their length (the length travels first). Others' `data` is ignored.
    func broadcast(_ data: Data, from root: Int, tag: String? = nil) throws -> Data {
        var length = [Int64(rank == root ? data.count : 0)]
        try broadcast(&length, from: root, tag: tag)
        var bytes = rank == root ? [UInt8](data) : [UInt8](repeating: 0, count: Int(length[0]))
        try broadcast(&bytes, from: root, tag: tag)
        return Data(bytes)
    }

    func broadcast(_ string: String, from root: Int, tag: String? = nil) throws -> String {
        String(decoding: try broadcast(Data(string.utf8), from: root, tag: tag), as: UTF8.self)
    }

    /// Root's value, sent as JSON. Only the root's `value` is used; it must not be nil there.
    func broadcast<V: Codable>(json value: V?, from root: Int, tag: String? = nil) throws -> V {
        var payload = Data()
        if rank == root {
            guard let value else { throw ESFTError("\(CollectiveChecks.name("broadcast", tag)): the root rank \(root) has no value to send") }
            payload = try JSONEncoder().encode(value)
        }
        let received = try broadcast(payload, from: root, tag: tag)
        do { return try JSONDecoder().decode(V.self, from: received) } catch {
            throw ESFTError("\(CollectiveChecks.name("broadcast", tag)): cannot decode \(V.self) sent by rank \(root): \(error)")
        }
    }

    func allGather<T: CollectiveElement>(_ value: T) throws -> [T] { try allGather(value, tag: nil) }

    func allToAll<T: CollectiveElement>(_ send: [T]) throws -> [T] { try allToAll(send, tag: nil) }

    func maxAllReduce(_ value: Double) throws -> Double { try maxAllReduce(value, tag: nil) }

    /// Arrays in, arrays out; same rules as the pointer form.
    func allToAllV<T: CollectiveElement>(send: [T], sendCounts: [Int], sendDisplacements: [Int],
                                         receive: inout [T], receiveCounts: [Int], receiveDisplacements: [Int],
                                         tag: String? = nil) throws {
        try send.withUnsafeBufferPointer { s in
            try receive.withUnsafeMutableBufferPointer { r in
                try allToAllV(send: s, sendCounts: sendCounts, sendDisplacements: sendDisplacements,
                              receive: r, receiveCounts: receiveCounts, receiveDisplacements: receiveDisplacements, tag: tag)
            }
        }
    }
}

import ESFTBase
import Foundation

/// One rank, no MPI: every collective is the identity or a copy. Arguments are checked exactly as
/// MPICommunicator checks them, and calls are counted (with zero bytes moved), so single-process
/// runs and tests exercise the same call sequence as a real job.
public final class SingleProcessCommunicator: Communicator {
    public let rank = 0
    public let size = 1
    public var implementationName: String { "single process (no MPI), 1 rank" }
    public private(set) var stats = CommunicationStats()

    public init() {}

    public func resetStats() { stats = CommunicationStats() }

    private func count(_ collective: String, _ tag: String?, local: Int = 0, _ body: () throws -> Void) rethrows {
        let start = Stopwatch.now()
        try body()
        stats.record(collective, tag: tag, sent: 0, received: 0, local: local, seconds: Stopwatch.seconds(since: start))
    }

    public func setStallTimeout(_ seconds: Double?) {}
    public var stallTimeout: Double? { nil }
    public func setStallContext(_ text: String) {}
    public func setStallHeartbeats(_ directory: URL?) {}

    public func barrier(tag: String?) throws { count("barrier", tag) {} }

    public func allReduceSum<T: CollectiveElement>(_ buffer: UnsafeMutableBufferPointer<T>, tag: String?) throws {
        _ = try CollectiveChecks.int32(buffer.count, "count", "allReduceSum", tag)
        count("allReduceSum", tag) {}
    }

    public func reduceSum<T: CollectiveElement>(_ buffer: UnsafeMutableBufferPointer<T>, toRoot root: Int, tag: String?) throws {
        try CollectiveChecks.root(root, size: 1, "reduceSum", tag)
        _ = try CollectiveChecks.int32(buffer.count, "count", "reduceSum", tag)
        count("reduceSum", tag) {}
    }

    public func broadcast<T: CollectiveElement>(_ buffer: UnsafeMutableBufferPointer<T>, from root: Int, tag: String?) throws {
        try CollectiveChecks.root(root, size: 1, "broadcast", tag)
        _ = try CollectiveChecks.int32(buffer.count, "count", "broadcast", tag)
        count("broadcast", tag) {}
    }

    public func allGather<T: CollectiveElement>(_ value: T, tag: String?) throws -> [T] {
        count("allGather", tag) {}
        return [value]
    }

    public func allToAll<T: CollectiveElement>(_ send: [T], tag: String?) throws -> [T] {
        try CollectiveChecks.allToAll(count: send.count, size: 1, tag)
        count("allToAll", tag, local: MemoryLayout<T>.stride) {}
        return send
    }

    public func allToAllV<T: CollectiveElement>(send: UnsafeBufferPointer<T>, sendCounts: [Int], sendDisplacements: [Int],
                                                receive: UnsafeMutableBufferPointer<T>, receiveCounts: [Int],
                                                receiveDisplacements: [Int], tag: String?) throws {
        _ = try CollectiveChecks.allToAllVSide("send", counts: sendCounts, displacements: sendDisplacements,
                                               bufferCount: send.count, size: 1, tag)
        _ = try CollectiveChecks.allToAllVSide("receive", counts: receiveCounts, displacements: receiveDisplacements,
                                               bufferCount: receive.count, size: 1, tag)
        // MPI cannot detect a receive count larger than what arrives; here we can, so we insist.
        guard sendCounts[0] == receiveCounts[0] else {
            throw ESFTError("\(CollectiveChecks.name("allToAllV", tag)): receive count from rank 0 (\(receiveCounts[0])) differs from what rank 0 sends (\(sendCounts[0]))")
        }
        let n = sendCounts[0]
        count("allToAllV", tag, local: n * MemoryLayout<T>.stride) {
            if n > 0 {
                (receive.baseAddress! + receiveDisplacements[0]).update(from: send.baseAddress! + sendDisplacements[0], count: n)
            }
        }
    }

    public func maxAllReduce(_ value: Double, tag: String?) throws -> Double {
        count("maxAllReduce", tag) {}
        return value
    }

    public func abort(message: String) -> Never {
        fflush(stdout)
        // The same line a command's own errors make (ErrorText.line): esft <command>: error: <message>.
        let command = CommandLine.arguments.dropFirst().first.map { " " + $0 } ?? ""
        FileHandle.standardError.write("esft\(command): error: \(message)\n".data(using: .utf8)!)
        exit(1)
    }

    public func finalize() throws {}
}

import CMPI
import CMPIShims
import ESFTBase
import Foundation

/// The MPI communicator: every rank of MPI_COMM_WORLD.
///
/// It works on a duplicate of MPI_COMM_WORLD so our traffic never matches a library's messages,
/// and sets MPI_ERRORS_RETURN on that duplicate: a failing call becomes an ESFTError naming the
/// collective and its tag, which `runRanked` prints before MPI_Abort ends every rank. (With the
/// default MPI_ERRORS_ARE_FATAL the job would also end, but with MPI's generic message and without
/// saying which layer's exchange failed.) MPI_COMM_WORLD itself keeps MPI_ERRORS_ARE_FATAL.
public final class MPICommunicator: Communicator {
    public let rank: Int
    public let size: Int
    public private(set) var stats = CommunicationStats()
    private var comm: MPI_Comm?
    private lazy var watchdog = StallWatchdog(rank: rank, size: size) { [rank, size] message in
        FileHandle.standardError.write(Data("esft: rank \(rank) of \(size): error: \(message)\n".utf8))
        if MPIRuntime.isActive { MPI_Abort(esft_mpi_comm_world(), 1) }
    }

    /// Initialises MPI (once per process; MPI_THREAD_FUNNELED) and joins all ranks of the job.
    /// A process started without mpirun becomes a 1-rank MPI job.
    public init() throws {
        try MPIRuntime.initialize()
        var dup: MPI_Comm? = nil
        try MPIRuntime.check(MPI_Comm_dup(esft_mpi_comm_world(), &dup), "MPI_Comm_dup")
        try MPIRuntime.check(MPI_Comm_set_errhandler(dup, esft_mpi_errors_return()), "MPI_Comm_set_errhandler")
        var r: Int32 = 0, s: Int32 = 0
        try MPIRuntime.check(MPI_Comm_rank(dup, &r), "MPI_Comm_rank")
        try MPIRuntime.check(MPI_Comm_size(dup, &s), "MPI_Comm_size")
        comm = dup
        rank = Int(r)
        size = Int(s)
    }

    public var implementationName: String {
        "MPI (\(MPIRuntime.libraryVersion), \(MPIRuntime.threadLevel)), \(size) rank\(size == 1 ? "" : "s")"
    }

    public func resetStats() { stats = CommunicationStats() }

    /// Runs one MPI call: checks the communicator is live, times it, turns its return code into an error, counts it.
    private func call(_ collective: String, _ tag: String?, sent: Int = 0, received: Int = 0, local: Int = 0,
                      _ body: (MPI_Comm?) -> Int32) throws {
        guard let comm else {
            throw ESFTError("\(CollectiveChecks.name(collective, tag)): communicator used after finalize()")
        }
        // Debug builds (the tests): every collective is called from the main thread; workers never communicate.
        assert(MPIRuntime.onMPIThread, "\(collective) called off the thread that initialised MPI (MPI_THREAD_FUNNELED)")
        let start = Stopwatch.now()
        watchdog.enter(CollectiveChecks.name(collective, tag))
        defer { watchdog.leave() }
        try MPIRuntime.check(body(comm), CollectiveChecks.name(collective, tag))
        stats.record(collective, tag: tag, sent: sent, received: received, local: local, seconds: Stopwatch.seconds(since: start))
    }

    /// Bytes of `n` elements of `T`, for the counters.
    private func bytes<T>(_ n: Int, _: T.Type) -> Int { n * MemoryLayout<T>.stride }
    private var others: Int { size - 1 }

    public func barrier(tag: String?) throws {
        try call("barrier", tag) { MPI_Barrier($0) }
    }

    public func allReduceSum<T: CollectiveElement>(_ buffer: UnsafeMutableBufferPointer<T>, tag: String?) throws {
        let n = try CollectiveChecks.int32(buffer.count, "count", "allReduceSum", tag)
        let b = size > 1 ? bytes(buffer.count, T.self) : 0
        try call("allReduceSum", tag, sent: b, received: b) {
            MPI_Allreduce(esft_mpi_in_place(), buffer.baseAddress, n, MPIRuntime.datatype(T.self), esft_mpi_sum(), $0)
        }
    }

    public func reduceSum<T: CollectiveElement>(_ buffer: UnsafeMutableBufferPointer<T>, toRoot root: Int, tag: String?) throws {
        try CollectiveChecks.root(root, size: size, "reduceSum", tag)
        let n = try CollectiveChecks.int32(buffer.count, "count", "reduceSum", tag)
        let b = bytes(buffer.count, T.self)
        let isRoot = rank == root
        try call("reduceSum", tag, sent: isRoot ? 0 : b, received: isRoot ? others * b : 0) {
            // The root reduces in place; the others' receive buffer is ignored by MPI, so theirs stays unchanged.
            let sendBuffer: UnsafeRawPointer? = isRoot ? UnsafeRawPointer(esft_mpi_in_place()) : UnsafeRawPointer(buffer.baseAddress)
            return MPI_Reduce(sendBuffer, isRoot ? buffer.baseAddress : nil,
                       n, MPIRuntime.datatype(T.self), esft_mpi_sum(), Int32(root), $0)
        }
    }

    public func broadcast<T: CollectiveElement>(_ buffer: UnsafeMutableBufferPointer<T>, from root: Int, tag: String?) throws {
        try CollectiveChecks.root(root, size: size, "broadcast", tag)
        let n = try CollectiveChecks.int32(buffer.count, "count", "broadcast", tag)
        let b = bytes(buffer.count, T.self)
        let isRoot = rank == root
        try call("broadcast", tag, sent: isRoot ? others * b : 0, received: isRoot ? 0 : b) {
            MPI_Bcast(buffer.baseAddress, n, MPIRuntime.datatype(T.self), Int32(root), $0)
        }
    }

    public func allGather<T: CollectiveElement>(_ value: T, tag: String?) throws -> [T] {
        var out = [T](repeating: value, count: size)
        let v = [value]
        let b = bytes(1, T.self)
        try v.withUnsafeBufferPointer { s in
            try out.withUnsafeMutableBufferPointer { o in
                try call("allGather", tag, sent: others * b, received: others * b, local: b) {
                    MPI_Allgather(s.baseAddress, 1, MPIRuntime.datatype(T.self), o.baseAddress, 1, MPIRuntime.datatype(T.self), $0)
                }
            }
        }
        return out
    }

    public func allToAll<T: CollectiveElement>(_ send: [T], tag: String?) throws -> [T] {
        try CollectiveChecks.allToAll(count: send.count, size: size, tag)
        var out = send
        let b = bytes(1, T.self)
        try send.withUnsafeBufferPointer { s in
            try out.withUnsafeMutableBufferPointer { o in
                try call("allToAll", tag, sent: others * b, received: others * b, local: b) {
                    MPI_Alltoall(s.baseAddress, 1, MPIRuntime.datatype(T.self), o.baseAddress, 1, MPIRuntime.datatype(T.self), $0)
                }
            }
        }
        return out
    }

    public func allToAllV<T: CollectiveElement>(send: UnsafeBufferPointer<T>, sendCounts: [Int], sendDisplacements: [Int],
                                                receive: UnsafeMutableBufferPointer<T>, receiveCounts: [Int],
                                                receiveDisplacements: [Int], tag: String?) throws {
        let s = try CollectiveChecks.allToAllVSide("send", counts: sendCounts, displacements: sendDisplacements,
                                                   bufferCount: send.count, size: size, tag)
        let r = try CollectiveChecks.allToAllVSide("receive", counts: receiveCounts, displacements: receiveDisplacements,
                                                   bufferCount: receive.count, size: size, tag)
        if let sb = send.baseAddress, let rb = receive.baseAddress, sb < rb + receive.count, UnsafePointer(rb) < sb + send.count {
            throw ESFTError("\(CollectiveChecks.name("allToAllV", tag)): send and receive buffers overlap")
        }
        let sent = sendCounts.reduce(0, +) - sendCounts[rank], received = receiveCounts.reduce(0, +) - receiveCounts[rank]
        try call("allToAllV", tag, sent: bytes(sent, T.self), received: bytes(received, T.self),
                 local: bytes(sendCounts[rank], T.self)) {
            MPI_Alltoallv(send.baseAddress, s.counts, s.displacements, MPIRuntime.datatype(T.self),
                          receive.baseAddress, r.counts, r.displacements, MPIRuntime.datatype(T.self), $0)
        }
    }

    public func maxAllReduce(_ value: Double, tag: String?) throws -> Double {
        var v = value
        let b = size > 1 ? bytes(1, Double.self) : 0
        try call("maxAllReduce", tag, sent: b, received: b) {
            MPI_Allreduce(esft_mpi_in_place(), &v, 1, esft_mpi_double(), esft_mpi_max(), $0)
        }
        return v
    }

    public func setStallTimeout(_ seconds: Double?) { watchdog.setTimeout(seconds) }
    public var stallTimeout: Double? { watchdog.currentTimeout }
    public func setStallContext(_ text: String) { watchdog.setContext(text) }
    public func setStallHeartbeats(_ directory: URL?) { if size > 1 { watchdog.setHeartbeats(directory) } }

    public func abort(message: String) -> Never {
        fflush(stdout)
        FileHandle.standardError.write("esft: rank \(rank) of \(size): error: \(message)\n".data(using: .utf8)!)
        if MPIRuntime.isActive { MPI_Abort(esft_mpi_comm_world(), 1) }
        exit(1)
    }

    public func finalize() throws {
        if comm != nil {
            try MPIRuntime.check(MPI_Comm_free(&comm), "MPI_Comm_free")
            comm = nil
        }
        try MPIRuntime.finalize()
    }
}

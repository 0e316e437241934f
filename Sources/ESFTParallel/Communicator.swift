import ESFTBase
import Foundation

/// A group of ranks and the collectives the trainer needs.
///
/// Rules every caller follows (the classic MPI hangs otherwise):
/// - every rank calls the same collectives in the same order, even with zero elements;
/// - only the thread that created the communicator calls it (MPI_THREAD_FUNNELED);
/// - errors go through `runRanked`, which aborts the whole job instead of leaving peers waiting.
///
/// `tag` names the call site in `stats` (e.g. "layer 3 forward dispatch"); nil groups untagged calls.
/// Counts and displacements are in elements, never bytes.
public protocol Communicator: AnyObject {
    var rank: Int { get }
    var size: Int { get }
    /// A one-line description for logs, e.g. "MPI (Open MPI v4.1.4), 4 ranks".
    var implementationName: String { get }

    /// Counters since creation or the last `resetStats()`.
    var stats: CommunicationStats { get }
    func resetStats()

    func barrier(tag: String?) throws

    /// Element-wise sum over all ranks, result on every rank, in place.
    func allReduceSum<T: CollectiveElement>(_ buffer: UnsafeMutableBufferPointer<T>, tag: String?) throws

    /// Element-wise sum over all ranks into `buffer` on `root`; other ranks' buffers are left unchanged.
    func reduceSum<T: CollectiveElement>(_ buffer: UnsafeMutableBufferPointer<T>, toRoot root: Int, tag: String?) throws

    /// Copies `buffer` on `root` into `buffer` on every other rank; all ranks pass the same count.
    func broadcast<T: CollectiveElement>(_ buffer: UnsafeMutableBufferPointer<T>, from root: Int, tag: String?) throws

    /// One value per rank, returned in rank order on every rank.
    func allGather<T: CollectiveElement>(_ value: T, tag: String?) throws -> [T]

    /// `send[s]` goes to rank s; the result's element s came from rank s (MPI_Alltoall, one element each).
    func allToAll<T: CollectiveElement>(_ send: [T], tag: String?) throws -> [T]

    /// Variable all-to-all (MPI_Alltoallv): `sendCounts[s]` elements from `send[sendDisplacements[s]...]`
    /// go to rank s; `receiveCounts[s]` elements from rank s land at `receive[receiveDisplacements[s]...]`.
    /// Receive counts must equal what each source sends (exchange them first with `allToAll`).
    func allToAllV<T: CollectiveElement>(send: UnsafeBufferPointer<T>, sendCounts: [Int], sendDisplacements: [Int],
                                         receive: UnsafeMutableBufferPointer<T>, receiveCounts: [Int],
                                         receiveDisplacements: [Int], tag: String?) throws

    /// The largest `value` over all ranks (e.g. a step's wall time: the slowest rank decides).
    func maxAllReduce(_ value: Double, tag: String?) throws -> Double

    /// Waiting longer than `seconds` inside one collective aborts the whole job with a message (StallWatchdog);
    /// nil (the default) never does. A single process has no peers to wait for: its communicator ignores it.
    func setStallTimeout(_ seconds: Double?)
    var stallTimeout: Double? { get }
    /// What the run is doing, named by a stall's message (e.g. "step 12").
    func setStallContext(_ text: String)
    /// A directory every rank sees, where each rank's watchdog beats once a second, so that a stall's message
    /// names the rank whose beat stood still; nil: no heartbeats.
    func setStallHeartbeats(_ directory: URL?)

    /// Prints `esft: rank R of N: error: <message>` to stderr and ends every rank of the job.
    func abort(message: String) -> Never

    /// Ends MPI for this process; call once at the end of a command, on every rank. No collective works afterwards.
    func finalize() throws
}

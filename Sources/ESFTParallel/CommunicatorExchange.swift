import ESFTBase

/// The row exchange over a communicator: counts with MPI_Alltoall, rows with MPI_Alltoallv, each
/// counted under the tag given. Every rank calls it in the same order, with zero rows if it has none.
public final class CommunicatorExchange: RowExchange {
    let comm: Communicator

    public init(_ comm: Communicator) { self.comm = comm }

    public var rank: Int { comm.rank }
    public var ranks: Int { comm.size }

    public func exchangeCounts(_ sendCounts: [Int], tag: String?) throws -> [Int] {
        try comm.allToAll(sendCounts.map { Int64($0) }, tag: tag).map { Int($0) }
    }

    public func exchangeRows<T: CollectiveElement>(send: UnsafePointer<T>?, sendCounts: [Int], receive: UnsafeMutablePointer<T>?,
                                                   receiveCounts: [Int], width: Int, tag: String?) throws {
        let sendElements = sendCounts.map { $0 * width }, receiveElements = receiveCounts.map { $0 * width }
        try comm.allToAllV(send: UnsafeBufferPointer(start: send, count: sendElements.reduce(0, +)),
                           sendCounts: sendElements, sendDisplacements: packedDisplacements(sendElements),
                           receive: UnsafeMutableBufferPointer(start: receive, count: receiveElements.reduce(0, +)),
                           receiveCounts: receiveElements, receiveDisplacements: packedDisplacements(receiveElements), tag: tag)
    }
}

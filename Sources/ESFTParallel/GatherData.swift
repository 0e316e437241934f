import ESFTBase
import Foundation

public extension Communicator {
    /// Every rank's bytes, whatever their lengths, on `root` (in rank order); an empty list elsewhere.
    /// For small records (a checkpoint file's digests), not bulk data.
    func gather(_ data: Data, toRoot root: Int, tag: String? = nil) throws -> [Data] {
        let lengths = try allGather(Int64(data.count), tag: tag).map { Int($0) }
        var send = [Int](repeating: 0, count: size), receive = send
        send[root] = data.count
        if rank == root { receive = lengths }
        let displacements = receive.reduce(into: [0]) { $0.append($0.last! + $1) }
        var received = [UInt8](repeating: 0, count: displacements.last!)
        try allToAllV(send: [UInt8](data), sendCounts: send, sendDisplacements: [Int](repeating: 0, count: size),
                      receive: &received, receiveCounts: receive, receiveDisplacements: Array(displacements.dropLast()), tag: tag)
        guard rank == root else { return [] }
        return (0..<size).map { Data(received[displacements[$0]..<displacements[$0 + 1]]) }
    }
}

import ESFTKernels
import ESFTParallel
import Foundation
import XCTest

/// The single-process communicator: every collective is the identity or a copy, bad arguments fail
/// as they would under MPI, and calls are counted with zero bytes moved.
final class SingleProcessCommunicatorTests: XCTestCase {
    func testCollectivesAreTheIdentity() throws {
        let comm = SingleProcessCommunicator()
        XCTAssertEqual(comm.rank, 0)
        XCTAssertEqual(comm.size, 1)
        try comm.barrier()

        var f: [Float] = [1, -2, 3.5], d: [Double] = [1e300, -0.5], i: [Int64] = [Int64.max, -7]
        try comm.allReduceSum(&f, tag: "grads")
        try comm.allReduceSum(&d)
        try comm.allReduceSum(&i)
        XCTAssertEqual(f, [1, -2, 3.5])
        XCTAssertEqual(d, [1e300, -0.5])
        XCTAssertEqual(i, [Int64.max, -7])
        try f.withUnsafeMutableBufferPointer { try comm.allReduceSum($0.baseAddress!, count: $0.count) }
        XCTAssertEqual(f, [1, -2, 3.5])
        XCTAssertEqual(try comm.allReduceSum(Int64(5)), 5)

        try comm.reduceSum(&d, toRoot: 0)
        try comm.reduceSum(&i, toRoot: 0)
        XCTAssertEqual(d, [1e300, -0.5])
        XCTAssertEqual(i, [Int64.max, -7])

        XCTAssertEqual(try comm.broadcast(Data([9, 8, 7]), from: 0), Data([9, 8, 7]))
        XCTAssertEqual(try comm.broadcast("experts ✓", from: 0), "experts ✓")
        let config = ["1": [8, 26, 55]]
        XCTAssertEqual(try comm.broadcast(json: config, from: 0), config)

        XCTAssertEqual(try comm.allGather(Int64(42)), [42])
        XCTAssertEqual(try comm.allToAll([Int32(3)]), [3])
        XCTAssertEqual(try comm.allToAll([Int64(1) << 40]), [1 << 40])
        XCTAssertEqual(try comm.maxAllReduce(-2.5), -2.5)
    }

    func testAllToAllVCopiesBetweenDisplacements() throws {
        let comm = SingleProcessCommunicator()
        let send: [Float] = [0, 0, 1, 2, 3, 0]
        var receive = [Float](repeating: -1, count: 5)
        try comm.allToAllV(send: send, sendCounts: [3], sendDisplacements: [2],
                           receive: &receive, receiveCounts: [3], receiveDisplacements: [1], tag: "layer 1 forward dispatch")
        XCTAssertEqual(receive, [-1, 1, 2, 3, -1])

        // Zero rows: empty buffers (nil base addresses) are fine.
        var empty: [Float] = []
        try comm.allToAllV(send: [Float](), sendCounts: [0], sendDisplacements: [0],
                           receive: &empty, receiveCounts: [0], receiveDisplacements: [0])

        let rows: [Float] = [1, 2, 3, 4, 5, 6]
        let got = try rows.withUnsafeBufferPointer { try CommunicatorExchange(comm).exchangeRows($0, rowsTo: [2], width: 3, tag: "x") }
        XCTAssertEqual(got.values, rows)
        XCTAssertEqual(got.rowsFrom, [2])
    }

    func testBadArgumentsFailWithAClearMessage() throws {
        let comm = SingleProcessCommunicator()
        var v: [Double] = [1]
        func message(_ body: () throws -> Void) -> String {
            do { try body(); return "accepted" } catch let e as ESFTError { return e.message } catch { return "\(error)" }
        }
        XCTAssert(message { try comm.reduceSum(&v, toRoot: 1, tag: "scores") }.contains("reduceSum 'scores': root 1 is not a rank"))
        XCTAssert(message { try comm.broadcast(&v, from: -1) }.contains("root -1"))
        XCTAssert(message { _ = try comm.allToAll([Int32(1), 2]) }.contains("need one per rank (1)"))
        var r = [Float](repeating: 0, count: 4)
        XCTAssert(message {
            try comm.allToAllV(send: [Float](repeating: 0, count: 4), sendCounts: [3], sendDisplacements: [2],
                               receive: &r, receiveCounts: [3], receiveDisplacements: [0], tag: "layer 2 backward combine")
        }.contains("allToAllV 'layer 2 backward combine': send segment for rank 0 (2 + 3 elements) exceeds the 4-element send buffer"))
        XCTAssert(message {
            try comm.allToAllV(send: [Float](repeating: 0, count: 4), sendCounts: [2], sendDisplacements: [0],
                               receive: &r, receiveCounts: [3], receiveDisplacements: [0])
        }.contains("receive count from rank 0 (3) differs from what rank 0 sends (2)"))
        XCTAssert(message {
            try comm.allToAllV(send: [Float](repeating: 0, count: 4), sendCounts: [-1], sendDisplacements: [0],
                               receive: &r, receiveCounts: [0], receiveDisplacements: [0])
        }.contains("outside 0..."))
        XCTAssert(message { _ = try CommunicatorExchange(comm).exchangeRows(UnsafeBufferPointer<Float>(start: nil, count: 0), rowsTo: [1], width: 2) }
            .contains("do not fill"))
        XCTAssert(message { let _: [Int] = try comm.broadcast(json: nil, from: 0) }.contains("has no value"))
        XCTAssertTrue(comm.stats.isEmpty, "rejected calls are not counted")
    }

    func testCountersCountCallsAndNoBytesMoved() throws {
        let comm = SingleProcessCommunicator()
        var f = [Float](repeating: 1, count: 10)
        try comm.allReduceSum(&f, tag: "grads")
        try comm.allReduceSum(&f, tag: "grads")
        try comm.allReduceSum(&f)
        var recv = [Float](repeating: 0, count: 6)
        try comm.allToAllV(send: [Float](repeating: 2, count: 6), sendCounts: [6], sendDisplacements: [0],
                           receive: &recv, receiveCounts: [6], receiveDisplacements: [0], tag: "layer 3 forward dispatch")

        let s = comm.stats
        XCTAssertEqual(s["allReduceSum", tag: "grads"].calls, 2)
        XCTAssertEqual(s["allReduceSum"].calls, 1, "untagged calls have their own entry")
        XCTAssertEqual(s.total(collective: "allReduceSum").calls, 3)
        let a2a = s["allToAllV", tag: "layer 3 forward dispatch"]
        XCTAssertEqual(a2a.calls, 1)
        XCTAssertEqual(a2a.bytesSent, 0)
        XCTAssertEqual(a2a.bytesReceived, 0)
        XCTAssertEqual(a2a.bytesLocal, 24, "the rows a rank keeps count as local bytes")
        XCTAssertEqual(s.total().calls, 4)

        // A step snapshot resets; merging snapshots accumulates.
        let step1 = comm.takeStats()
        XCTAssertTrue(comm.stats.isEmpty)
        try comm.barrier(tag: "step end")
        var run = step1
        run.merge(comm.takeStats())
        XCTAssertEqual(run.total().calls, 5)
        XCTAssertEqual(run["barrier", tag: "step end"].calls, 1)
    }

    func testSummaryJSON() throws {
        let comm = SingleProcessCommunicator()
        try comm.barrier(tag: "b")
        var recv = [Float](repeating: 0, count: 2)
        try comm.allToAllV(send: [Float](repeating: 1, count: 2), sendCounts: [2], sendDisplacements: [0],
                           receive: &recv, receiveCounts: [2], receiveDisplacements: [0], tag: "layer 1 forward dispatch")
        let summary = comm.statsSummary()
        let data = try summary.jsonData()
        XCTAssertEqual(try JSONDecoder().decode(CommunicationSummary.self, from: data), summary)
        let obj = try XCTUnwrap(JSONSerialization.jsonObject(with: data) as? [String: Any])
        XCTAssertEqual(obj["rank"] as? Int, 0)
        XCTAssertEqual(obj["size"] as? Int, 1)
        let rows = try XCTUnwrap(obj["collectives"] as? [[String: Any]])
        XCTAssertEqual(rows.map { $0["collective"] as? String }, ["allToAllV", "barrier"], "sorted by collective")
        XCTAssertEqual(rows[0]["tag"] as? String, "layer 1 forward dispatch")
        XCTAssertEqual(rows[0]["bytes_local"] as? Int, 8)
        for key in ["calls", "bytes_sent", "bytes_received", "bytes_local", "seconds"] {
            XCTAssertNotNil(rows[0][key], "row has \(key)")
            XCTAssertNotNil((obj["total"] as? [String: Any])?[key], "total has \(key)")
        }
    }

    func testLauncherDetection() {
        XCTAssertFalse(Communicators.launchedByMPI([:]))
        XCTAssertTrue(Communicators.launchedByMPI(["OMPI_COMM_WORLD_SIZE": "4"]))
        XCTAssertTrue(Communicators.launchedByMPI(["PMIX_RANK": "0"]))
        XCTAssertTrue(Communicators.launchedByMPI(["PMI_RANK": "1"]))
        XCTAssertTrue(Communicators.launchedByMPI(["SLURM_PROCID": "0", "SLURM_NTASKS": "4"]))
        XCTAssertFalse(Communicators.launchedByMPI(["SLURM_PROCID": "0", "SLURM_NTASKS": "1"]), "a 1-task step or batch script")
        XCTAssertFalse(Communicators.launchedByMPI(["SLURM_PROCID": "0", "SLURM_NTASKS": "4", "SLURM_STEP_NUM_TASKS": "1"]))
        XCTAssertTrue(Communicators.launchedByMPI(["ESFT_MPI": "1"]))
        XCTAssertFalse(Communicators.launchedByMPI(["ESFT_MPI": "0", "OMPI_COMM_WORLD_SIZE": "2"]))
        XCTAssertTrue(try Communicators.fromEnvironment([:]) is SingleProcessCommunicator)
    }

    func testRunRankedPassesResultsThrough() {
        let comm = SingleProcessCommunicator()
        XCTAssertEqual(runRanked(comm) { 6 * 7 }, 42)
    }
}

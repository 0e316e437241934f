import ESFTParallel
import ESFTTestSupport
import Foundation
import XCTest

/// Real multi-process jobs: `mpirun -n R --oversubscribe esft mpi-check` must pass every check on
/// every rank count, and a failing rank must end the job at once instead of hanging it.
final class MPICheckTests: XCTestCase {
    /// Small enough to be quick on two shared cores, large enough to need several messages.
    let quick = ["mpi-check", "--size-mib", "2", "--repeat", "2"]
    let checkNames = ["barrier", "broadcast JSON from every rank", "broadcast String from every rank", "broadcast Data from every rank", "broadcast JSON (Codable)",
                      "allReduceSum Float", "allReduceSum Double", "allReduceSum Int64", "reduceSum Double, Int64",
                      "allGather Int64", "allToAll Int32, Int64 counts", "allToAllV uneven rows", "allToAllV zero counts",
                      "exchangeRows (allToAll + allToAllV)", "maxAllReduce Double", "argument checks", "counters",
                      "allToAllV bandwidth"]

    override func setUpWithError() throws {
        if let why = MPIRun.unavailableReason { throw XCTSkip(why) }
    }

    private func assertAllPass(ranks: Int, file: StaticString = #filePath, line: UInt = #line) throws {
        let r = try MPIRun.run(ranks: ranks, arguments: quick)
        XCTAssertFalse(r.timedOut, "mpirun -n \(ranks) hung and was killed\n\(r.output)", file: file, line: line)
        XCTAssertEqual(r.status, 0, r.output, file: file, line: line)
        XCTAssert(r.stdout.contains("MPI (Open MPI") || r.stdout.contains("MPI ("), r.output, file: file, line: line)
        XCTAssert(r.stdout.contains(", \(ranks) ranks"), r.output, file: file, line: line)
        let lines = r.stdout.split(separator: "\n").map(String.init)
        for name in checkNames {
            let pass = lines.contains { $0 == "PASS  \(name)" || $0.hasPrefix("PASS  \(name) ") }
            XCTAssert(pass, "no PASS line for \(name) on \(ranks) ranks\n\(r.output)", file: file, line: line)
        }
        XCTAssertFalse(r.stdout.contains("FAIL"), r.output, file: file, line: line)
        XCTAssert(r.stdout.contains("mpi-check: all \(checkNames.count) checks passed on \(ranks) ranks"), r.output, file: file, line: line)
        for rank in 0..<ranks { XCTAssert(r.stdout.contains("  rank \(rank): host "), r.output, file: file, line: line) }
    }

    func testTwoRanks() throws { try assertAllPass(ranks: 2) }
    func testThreeRanks() throws { try assertAllPass(ranks: 3) }
    func testFourRanks() throws { try assertAllPass(ranks: 4) }

    func testOneRankUnderMPIRunAndWithoutIt() throws {
        let underMPI = try MPIRun.run(ranks: 1, arguments: quick)
        XCTAssertEqual(underMPI.status, 0, underMPI.output)
        XCTAssert(underMPI.stdout.contains("MPI (") && underMPI.stdout.contains("1 rank"), underMPI.output)

        let alone = try Executables.esft(quick)
        XCTAssertEqual(alone.status, 0, alone.stderr)
        XCTAssert(alone.stdout.contains("single process (no MPI)"), alone.stdout)
        XCTAssert(alone.stdout.contains("mpi-check: all \(checkNames.count) checks passed on 1 rank"), alone.stdout)
    }

    /// A rank that throws before a collective must end the job (MPI_Abort), not leave the others waiting.
    func testAFailingRankAbortsTheJob() throws {
        let r = try MPIRun.run(ranks: 3, arguments: quick + ["--fail-on-rank", "1"], timeout: 120)
        XCTAssertFalse(r.timedOut, "the job hung instead of aborting\n\(r.output)")
        XCTAssertNotEqual(r.status, 0, r.output)
        XCTAssert(r.stderr.contains("esft: rank 1 of 3: error: mpi-check: failing on purpose before the first collective"), r.output)
        XCTAssertFalse(r.stdout.contains("checks passed"), r.output)

        let single = try Executables.esft(quick + ["--fail-on-rank", "0"])
        XCTAssertNotEqual(single.status, 0)
        XCTAssert(single.stderr.contains("failing on purpose"), single.stderr)
    }

    /// An error inside MPI comes back as a return code (MPI_ERRORS_RETURN), names the collective, and ends the job.
    func testAnMPIErrorNamesTheCollectiveAndAbortsTheJob() throws {
        let r = try MPIRun.run(ranks: 3, arguments: quick + ["--fail-in-mpi", "1"], timeout: 120)
        XCTAssertFalse(r.timedOut, "the job hung instead of aborting\n\(r.output)")
        XCTAssertNotEqual(r.status, 0, r.output)
        XCTAssert(r.stderr.contains("esft: rank 1 of 3: error: allToAllV 'mpi-check truncated': MPI error"), r.output)
        XCTAssert(r.stderr.contains("MPI_ERR_TRUNCATE"), r.output)
    }

    /// The counters of a real 2-rank job, as written by --stats-json.
    func testStatsJSONCountsBytesBetweenRanks() throws {
        let dir = try Fixtures.tempDirectory("mpi-stats")
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("stats.json").path
        let r = try MPIRun.run(ranks: 2, arguments: quick + ["--stats-json", path])
        XCTAssertEqual(r.status, 0, r.output)
        let all = try JSONDecoder().decode([CommunicationSummary].self, from: Data(contentsOf: URL(fileURLWithPath: path)))
        XCTAssertEqual(all.map(\.rank), [0, 1])
        XCTAssertEqual(all.map(\.size), [2, 2])
        let rowBytes: Int64 = 5 * 4   // rows of 5 floats
        for (rank, summary) in all.enumerated() {
            let row = try XCTUnwrap(summary.collectives.first { $0.collective == "allToAllV" && $0.tag == "mpi-check uneven rows" })
            // rank r sends r*s+1 rows to rank s; to the other rank that is 1 row (0*1+1) either way.
            XCTAssertEqual(row.calls, 1)
            XCTAssertEqual(row.bytesSent, rowBytes, "rank \(rank)")
            XCTAssertEqual(row.bytesReceived, rowBytes, "rank \(rank)")
            XCTAssertEqual(row.bytesLocal, Int64(rank * rank + 1) * rowBytes, "rank \(rank)")
            XCTAssertGreaterThan(summary.total.calls, 20)
        }
    }

    func testHelpAndBadOptions() throws {
        let help = try Executables.esft(["mpi-check", "--help"])
        XCTAssertEqual(help.status, 0)
        XCTAssert(help.stdout.contains("mpirun -n R esft mpi-check"), help.stdout)
        let bad = try Executables.esft(["mpi-check", "--size-mib", "lots"])
        XCTAssertNotEqual(bad.status, 0)
        XCTAssert(bad.stderr.contains("--size-mib must be an integer"), bad.stderr)
        let typo = try MPIRun.run(ranks: 2, arguments: ["mpi-check", "--repaet", "3"], timeout: 120)
        XCTAssertFalse(typo.timedOut)
        XCTAssertNotEqual(typo.status, 0, "a typo ends every rank alike")
        XCTAssert(typo.stderr.contains("unknown option --repaet; did you mean --repeat?"), typo.output)
    }

    /// The hang guard itself: a job that never ends is killed, with every process it started.
    func testWatchdogKillsAHungJob() throws {
        let r = try MPIRun.run(ranks: 2, arguments: ["617"], executable: URL(fileURLWithPath: "/bin/sleep"), timeout: 3)
        XCTAssertTrue(r.timedOut)
        let survivors = ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).filter { pid in
            (try? String(contentsOfFile: "/proc/\(pid)/cmdline", encoding: .utf8)) == "/bin/sleep\u{0}617\u{0}"
        }
        XCTAssertEqual(survivors, [], "ranks left running after the watchdog")
    }
}

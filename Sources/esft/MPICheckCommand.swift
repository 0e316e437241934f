import ESFTKernels
import ESFTParallel
import Foundation

enum MPICheckCommand {
    static let help = """
    Usage: mpirun -n R esft mpi-check [--size-mib M] [--repeat K] [--stats-json FILE]
           esft mpi-check              (without mpirun: one rank, no MPI)

    Checks that MPI works for esft on this machine or cluster: run it first on a new cluster, with
    the same launcher, rank count and binding you will train with. Every collective esft uses
    (barrier, broadcast, all-reduce, reduce, all-gather, all-to-all, all-to-all-v) runs on data that
    depends on the rank, and every rank verifies the result exactly; this includes uneven and
    zero-count all-to-all-v exchanges (the rows that carry tokens to their experts). Rank 0 prints a
    table of where each rank runs (host, CPUs it may use, OPENBLAS_NUM_THREADS), one PASS/FAIL line
    per collective, and the bandwidth of a larger all-to-all-v. The exit status is 0 only when every
    check passed on every rank; failing ranks explain on stderr.

    MPI is used when a launcher started the process (mpirun, srun; or ESFT_MPI=1 to force a
    1-rank MPI job, ESFT_MPI=0 to force no MPI).

      --size-mib M       data each rank sends in the bandwidth all-to-all-v, in MiB (default 16;
                         0 skips the measurement)
      --repeat K         timed repetitions after one warm-up (default 5); the time of a repetition
                         is the slowest rank's
      --stats-json FILE  rank 0 writes every rank's communication counters (calls, bytes, seconds
                         per collective and tag) as a JSON array
      --fail-on-rank R   for testing the error path: rank R fails before its first collective; the
                         job must end at once with that rank's message and a non-zero status
      --fail-in-mpi R    for testing MPI error reporting: rank R posts too small a receive count in
                         an all-to-all-v; MPI's error (MPI_ERR_TRUNCATE) must end the job, naming
                         the collective
    """

    struct Options {
        var sizeMiB = 16
        var repeats = 5
        var statsJSON: String?
        var failOnRank: Int?
        var failInMPI: Int?
    }

    static func run(_ argv: [String]) throws {
        var args = Arguments(argv, command: "mpi-check")
        if args.wantsHelp { print(help); return }
        var options = Options()
        options.sizeMiB = try args.int("--size-mib", default: 16, min: 0)!
        options.repeats = try args.int("--repeat", default: 5, min: 1)!
        options.statsJSON = try args.option("--stats-json")
        options.failOnRank = try args.int("--fail-on-rank", min: 0)
        options.failInMPI = try args.int("--fail-in-mpi", min: 0)
        try args.finish()
        guard options.sizeMiB <= 4096 else { throw ESFTError("mpi-check: --size-mib \(options.sizeMiB) is more than 4096") }

        // Arguments are checked before MPI starts: a typo then ends every rank alike, without MPI.
        let comm = try Communicators.fromEnvironment()
        let suite = MPICheckSuite(comm: comm, options: options)
        runRanked(comm) {
            suite.say("esft mpi-check: \(comm.implementationName)")
            for (flag, bad) in [("--fail-on-rank", options.failOnRank), ("--fail-in-mpi", options.failInMPI)] {
                if let bad, bad >= comm.size { throw ESFTError("mpi-check: \(flag) \(bad): the job has only \(comm.size) rank(s)") }
            }
            if comm.rank == options.failOnRank {
                throw ESFTError("mpi-check: failing on purpose before the first collective (--fail-on-rank \(comm.rank))")
            }
            if let bad = options.failInMPI { try suite.truncatedReceive(on: bad) }
            try suite.runAll()
            if let path = options.statsJSON { try writeStats(comm, to: path) }
            suite.say(suite.failed == 0
                      ? "mpi-check: all \(suite.checks) checks passed on \(comm.size) rank\(comm.size == 1 ? "" : "s")"
                      : "mpi-check: \(suite.failed) of \(suite.checks) checks FAILED on \(comm.size) rank\(comm.size == 1 ? "" : "s")")
        }
        runRanked(comm) { try comm.finalize() }
        // Every rank knows the verdict, so every rank exits the same way.
        if suite.failed > 0 { exit(1) }
    }

    /// Rank 0 collects each rank's counters (taken before the collection itself) and writes them.
    static func writeStats(_ comm: Communicator, to path: String) throws {
        let mine = comm.statsSummary()
        var all: [CommunicationSummary] = []
        for root in 0..<comm.size {
            all.append(try comm.broadcast(json: comm.rank == root ? mine : nil, from: root, tag: "mpi-check stats"))
        }
        guard comm.rank == 0 else { return }
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys]
        do { try e.encode(all).write(to: URL(fileURLWithPath: path), options: .atomic) } catch {
            throw ESFTError("mpi-check: cannot write --stats-json \(path): \(ErrorText.reason(error))")
        }
    }
}

import Foundation

/// Launches real multi-process jobs from tests: `mpirun -n R --oversubscribe <esft> ...` with the
/// environment Open MPI needs when tests run as root, output captured, and a watchdog that kills
/// the whole job if it has not finished in time (a hang guard, not a timing assertion).
///
///     if let why = MPIRun.unavailableReason { throw XCTSkip(why) }
///     let r = try MPIRun.run(ranks: 3, arguments: ["mpi-check"])
///     XCTAssertEqual(r.status, 0, r.output)
public enum MPIRun {
    /// Open MPI refuses to run as root without these (containers, CI).
    public static let rootSafeEnvironment = ["OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"]

    /// The built `esft`, next to the test bundle in .build/<configuration>/.
    public static var esftExecutable: URL { Executables.esft }

    /// `mpirun` from PATH, or nil.
    public static var mpirun: URL? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        return path.split(separator: ":").map { URL(fileURLWithPath: String($0)).appendingPathComponent("mpirun") }
            .first { FileManager.default.isExecutableFile(atPath: $0.path) }
    }

    /// Why multi-process tests cannot run here (pass it to XCTSkip), or nil when they can.
    public static var unavailableReason: String? {
        if mpirun == nil { return "mpirun is not on PATH (install openmpi-bin to run the multi-process tests)" }
        if !FileManager.default.isExecutableFile(atPath: esftExecutable.path) {
            return "the esft executable is not at \(esftExecutable.path) (build it first: swift build)"
        }
        return nil
    }

    public struct Result {
        public let status: Int32
        public let stdout: String
        public let stderr: String
        /// True when the watchdog had to kill the job.
        public let timedOut: Bool
        public let seconds: Double
        /// Both streams, for assertion messages.
        public var output: String { "--- stdout ---\n\(stdout)\n--- stderr ---\n\(stderr)" }
    }

    /// Runs `mpirun -n ranks --oversubscribe [mpirunOptions] executable arguments`.
    /// `environment` is added to this process's environment (after the root-safe variables); variables
    /// that mark a process as a rank of a running job are removed, so tests also work under a launcher.
    public static func run(ranks: Int, arguments: [String], executable: URL = esftExecutable,
                           mpirunOptions: [String] = [], environment: [String: String] = [:],
                           timeout: TimeInterval = 300, started: (Int32) -> Void = { _ in }) throws -> Result {
        guard let mpirun else { throw MPIRunError("mpirun is not on PATH") }
        let process = Process()
        process.executableURL = mpirun
        process.arguments = ["-n", "\(ranks)", "--oversubscribe"] + mpirunOptions + [executable.path] + arguments
        var env = ProcessInfo.processInfo.environment.filter { key, _ in
            !["OMPI_COMM_WORLD_", "OMPI_UNIVERSE_SIZE", "PMIX_", "PMI_"].contains { key.hasPrefix($0) }
        }
        env.merge(rootSafeEnvironment) { $1 }
        env.merge(environment) { $1 }
        process.environment = env
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = FileHandle.nullDevice

        let exited = DispatchSemaphore(value: 0)
        process.terminationHandler = { _ in exited.signal() }
        let start = Date()
        try process.run()
        started(process.processIdentifier)
        // Drain both pipes concurrently so a chatty job never blocks on a full pipe.
        let outBox = DataBox(), errBox = DataBox(), readers = DispatchGroup()
        for (pipe, box) in [(out, outBox), (err, errBox)] {
            readers.enter()
            DispatchQueue.global().async { box.set(pipe.fileHandleForReading.readDataToEndOfFile()); readers.leave() }
        }
        var timedOut = false
        if exited.wait(timeout: .now() + timeout) == .timedOut {
            timedOut = true
            killJob(process.processIdentifier)
            _ = exited.wait(timeout: .now() + 30)
        }
        // Output stops when every rank has closed the pipes; orphans are killed above, so this is bounded.
        _ = readers.wait(timeout: .now() + 30)
        process.waitUntilExit()
        return Result(status: process.terminationStatus, stdout: String(decoding: outBox.get(), as: UTF8.self),
                      stderr: String(decoding: errBox.get(), as: UTF8.self), timedOut: timedOut,
                      seconds: Date().timeIntervalSince(start))
    }

    /// Ends mpirun and every process it started, by PID: SIGTERM to mpirun first (it then stops its
    /// ranks), SIGKILL to whatever is left. Ranks run in their own process groups, so a group kill
    /// of mpirun's group would miss them; we walk the process tree instead.
    static func killJob(_ pid: Int32) {
        let tree = descendants(of: pid)
        kill(pid, SIGTERM)
        let deadline = Date().addingTimeInterval(5)
        while Date() < deadline, ([pid] + tree).contains(where: { kill($0, 0) == 0 }) { usleep(100_000) }
        for p in tree + [pid] { kill(p, SIGKILL) }
    }

    /// All processes below `pid`, from the parent ids in /proc/<n>/stat.
    public static func descendants(of pid: Int32) -> [Int32] {
        var children: [Int32: [Int32]] = [:]
        for name in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
            guard let p = Int32(name), let stat = try? String(contentsOfFile: "/proc/\(name)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")") else { continue }
            // Fields after the command name: state, ppid, ...
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            if fields.count > 1, let ppid = Int32(fields[1]) { children[ppid, default: []].append(p) }
        }
        var out: [Int32] = [], queue = [pid]
        while let p = queue.popLast() {
            for c in children[p] ?? [] { out.append(c); queue.append(c) }
        }
        return out
    }
}

public struct MPIRunError: Error, CustomStringConvertible {
    public let description: String
    init(_ d: String) { description = d }
}

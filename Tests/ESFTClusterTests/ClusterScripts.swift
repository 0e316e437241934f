import ESFTStore
import ESFTTestSupport
import Foundation
import XCTest

/// Runs the cluster scripts under scripts/ (they build and tear down their own SLURM cluster or network
/// namespaces) with a hang guard: after `timeout` the script gets SIGTERM, on which its trap stops
/// daemons and deletes namespaces; whatever is left after 120 s more is killed by PID.
enum ClusterScripts {
    static let repo = Fixtures.root.deletingLastPathComponent().deletingLastPathComponent()
    static func script(_ name: String) -> URL { repo.appendingPathComponent("scripts").appendingPathComponent(name) }

    struct Result {
        let status: Int32, stdout: String, stderr: String, timedOut: Bool
        var output: String { "--- stdout ---\n\(stdout)\n--- stderr ---\n\(stderr)" }
        /// The scripts exit 77 when this machine cannot host the cluster (no root, no namespaces, ...).
        var skipReason: String? { status == 77 ? stderr.split(separator: "\n").last { $0.contains("SKIP") }.map(String.init) ?? stderr : nil }
    }

    static func run(_ script: URL, _ arguments: [String], environment: [String: String] = [:],
                    timeout: TimeInterval = 900) throws -> Result {
        let process = Process()
        process.executableURL = script
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment.filter { key, _ in
            !["OMPI_COMM_WORLD_", "OMPI_UNIVERSE_SIZE", "PMIX_", "PMI_", "SLURM_"].contains { key.hasPrefix($0) }
        }
        env.merge(MPIRun.rootSafeEnvironment) { $1 }
        env.merge(environment) { $1 }
        process.environment = env
        let outFile = try tempFile(), errFile = try tempFile()
        defer { try? FileManager.default.removeItem(at: outFile); try? FileManager.default.removeItem(at: errFile) }
        // Files, not pipes: daemons that inherit a pipe could keep it open past the script's end.
        process.standardOutput = try FileHandle(forWritingTo: outFile)
        process.standardError = try FileHandle(forWritingTo: errFile)
        process.standardInput = FileHandle.nullDevice
        let exited = DispatchSemaphore(value: 0)
        process.terminationHandler = { _ in exited.signal() }
        try process.run()
        var timedOut = false
        if exited.wait(timeout: .now() + timeout) == .timedOut {
            timedOut = true
            let tree = MPIRun.descendants(of: process.processIdentifier)
            kill(process.processIdentifier, SIGTERM)
            if exited.wait(timeout: .now() + 120) == .timedOut { kill(process.processIdentifier, SIGKILL) }
            for p in tree { kill(p, SIGKILL) }
        }
        process.waitUntilExit()
        return Result(status: process.terminationStatus, stdout: (try? String(contentsOf: outFile, encoding: .utf8)) ?? "",
                      stderr: (try? String(contentsOf: errFile, encoding: .utf8)) ?? "", timedOut: timedOut)
    }

    private static func tempFile() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("esft-cluster-\(UUID().uuidString).log")
        _ = FileManager.default.createFile(atPath: url.path, contents: nil)
        return url
    }

    /// `scontrol show job -o` output as fields (one line per job).
    static func jobFields(_ line: Substring) -> [String: String] {
        var fields: [String: String] = [:]
        for word in line.split(separator: " ") {
            guard let eq = word.firstIndex(of: "=") else { continue }
            fields[String(word[..<eq])] = String(word[word.index(after: eq)...])
        }
        return fields
    }

    static func tensors(_ file: URL) throws -> [String: [Float]] {
        try readSafetensorsFloats(file)
    }
}

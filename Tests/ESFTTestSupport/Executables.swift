import Foundation

/// Runs the built `esft` executable (it sits next to the test bundle in .build/<configuration>/).
public enum Executables {
    public static var buildDirectory: URL {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    }

    public static var esft: URL { buildDirectory.appendingPathComponent("esft") }

    public struct Result {
        public let status: Int32
        public let stdout: String
        public let stderr: String
    }

    /// Runs a command to completion, capturing its output (read concurrently so pipes never fill up).
    /// `started` gets the child's PID as soon as it runs (a test that signals it).
    public static func run(_ executable: URL, _ arguments: [String], environment: [String: String] = [:],
                           started: (Int32) -> Void = { _ in }) throws -> Result {
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        started(process.processIdentifier)
        let outBox = DataBox()
        let group = DispatchGroup()
        group.enter()
        DispatchQueue.global().async { outBox.set(out.fileHandleForReading.readDataToEndOfFile()); group.leave() }
        let errData = err.fileHandleForReading.readDataToEndOfFile()
        group.wait()
        process.waitUntilExit()
        return Result(status: process.terminationStatus, stdout: String(decoding: outBox.get(), as: UTF8.self),
                      stderr: String(decoding: errData, as: UTF8.self))
    }

    public static func esft(_ arguments: [String], environment: [String: String] = [:]) throws -> Result {
        try run(esft, arguments, environment: environment)
    }
}

/// Data handed from a reader thread to the waiting one.
final class DataBox: @unchecked Sendable {
    private let lock = NSLock()
    private var data = Data()
    func set(_ d: Data) { lock.lock(); data = d; lock.unlock() }
    func get() -> Data { lock.lock(); defer { lock.unlock() }; return data }
}

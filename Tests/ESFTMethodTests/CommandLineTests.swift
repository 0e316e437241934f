import ESFTMethod
import Foundation
import XCTest

/// Runs the built `esft` binary: exit status, messages, and that a failing command leaves no file behind.
final class CommandLineTests: XCTestCase {
    var work: URL!

    override func setUpWithError() throws {
        work = try MethodTestSupport.tempDirectory()
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: work)
    }

    static func esftBinary() throws -> URL {
        let candidates = [
            URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("esft"),
            MethodTestSupport.repoRoot.appendingPathComponent(".build/debug/esft"),
        ]
        guard let found = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0.path) }) else {
            throw XCTSkip("esft binary absent (looked at \(candidates.map(\.path))); run swift build first")
        }
        return found
    }

    @discardableResult
    func esft(_ args: [String]) throws -> (status: Int32, out: String, err: String) {
        let p = Process()
        p.executableURL = try Self.esftBinary()
        p.arguments = args
        p.currentDirectoryURL = work
        let out = Pipe(), err = Pipe()
        p.standardOutput = out; p.standardError = err
        try p.run()
        let o = out.fileHandleForReading.readDataToEndOfFile(), e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
    }

    /// Runs a command that must fail with every fragment in its message and leave `work` as it was.
    func assertFails(_ args: [String], _ fragments: String..., file: StaticString = #filePath, line: UInt = #line) throws {
        let before = MethodTestSupport.files(in: work)
        let r = try esft(args)
        XCTAssertEqual(r.status, 1, "exit status; stderr: \(r.err)", file: file, line: line)
        for f in fragments { XCTAssertTrue(r.err.contains(f), "'\(r.err)' lacks '\(f)'", file: file, line: line) }
        XCTAssertEqual(MethodTestSupport.files(in: work), before, "nothing left behind", file: file, line: line)
    }

    func writeScores(fingerprint: String?) throws -> String {
        let scores = MethodTestSupport.scores(token: [1: [0.1, 0.6, 0.2, 0.1], 2: [0.3, 0.3, 0.3, 0.1]], fingerprint: fingerprint)
        try scores.jsonData().write(to: work.appendingPathComponent("scores.json"))
        return "scores.json"
    }

    func testSelectWritesConfigAndReport() throws {
        try MethodTestSupport.write(json: MethodTestSupport.tinyConfigJSON(), to: work.appendingPathComponent("config.json"))
        let scores = try writeScores(fingerprint: modelFingerprint(config: try MethodTestSupport.tinyModel()))
        let r = try esft(["select", "--scores", scores, "--method", "token", "--threshold", "0.5", "--config", "config.json",
                          "--out", "experts.json"])
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertTrue(r.out.contains("trainable parameters: 288 of"), r.out)
        let config = try ExpertConfig.load(contentsOf: work.appendingPathComponent("experts.json"))
        XCTAssertEqual(config.experts, [1: [1], 2: [0, 1]])
        XCTAssertTrue(FileManager.default.fileExists(atPath: work.appendingPathComponent("experts.report.json").path))
        XCTAssertEqual(MethodTestSupport.files(in: work), ["config.json", "experts.json", "experts.report.json", "scores.json"])
    }

    func testSelectWithModelDirectory() throws {
        let model = work.appendingPathComponent("model")
        try FileManager.default.createDirectory(at: model, withIntermediateDirectories: true)
        try MethodTestSupport.write(json: MethodTestSupport.tinyConfigJSON(), to: model.appendingPathComponent("config.json"))
        let scores = try writeScores(fingerprint: nil)
        let r = try esft(["select", "--scores", scores, "--method", "gate", "--top-k", "2", "--model", "model",
                          "--shared-experts", "--out", "experts.json"])
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertTrue(r.err.contains("records no model fingerprint"), r.err)
        let config = try ExpertConfig.load(contentsOf: work.appendingPathComponent("experts.json"))
        XCTAssertEqual(config, ExpertConfig(experts: [1: [1, 2], 2: [0, 1]], sharedExperts: true))
        try assertFails(["select", "--scores", scores, "--method", "gate", "--top-k", "2", "--model", "model",
                         "--config", "model/config.json", "--out", "e.json"], "not both")
        try MethodTestSupport.write(json: MethodTestSupport.tinyConfigJSON(experts: 6), to: model.appendingPathComponent("config.json"))
        try assertFails(["select", "--scores", scores, "--method", "gate", "--top-k", "2", "--model", "model", "--out", "e.json"],
                        "metadata.experts 4", "n_routed_experts 6")
    }

    func testSelectBadInputsLeaveNothing() throws {
        let scores = try writeScores(fingerprint: nil)
        let base = ["select", "--scores", scores, "--out", "experts.json"]
        try assertFails(base + ["--method", "token", "--threshold", "1.5"], "threshold p must be in (0, 1]", "1.5")
        try assertFails(base + ["--method", "token", "--threshold", "0"], "threshold p must be in (0, 1]")
        try assertFails(base + ["--method", "token", "--top-k", "5"], "top-k must be in 1...4", "got 5")
        try assertFails(base + ["--method", "tokens", "--threshold", "0.2"], "unknown method 'tokens'")
        try assertFails(base + ["--method", "token"], "--threshold P or --top-k K")
        try assertFails(base + ["--method", "token", "--threshold", "0.2", "--top-k", "2"], "not both")
        try assertFails(["select", "--scores", "missing.json", "--method", "token", "--threshold", "0.2", "--out", "e.json"],
                        "missing.json", "cannot read")
    }

    func testSelectFingerprintMismatch() throws {
        try MethodTestSupport.write(json: MethodTestSupport.tinyConfigJSON(hidden: 16), to: work.appendingPathComponent("config.json"))
        let scores = try writeScores(fingerprint: modelFingerprint(config: try MethodTestSupport.tinyModel()))
        try assertFails(["select", "--scores", scores, "--method", "token", "--threshold", "0.2", "--config", "config.json",
                         "--out", "experts.json"], "model_fingerprint", "config.json", "different model")
    }

    func testScoreBadLogsLeaveNothing() throws {
        let logs = work.appendingPathComponent("logs")
        try FileManager.default.createDirectory(at: logs, withIntermediateDirectories: true)
        try Data("0\t1\t\t0.5\t0.5\n".utf8).write(to: logs.appendingPathComponent("expert_weights_1.txt"))
        try Data("0\t1\t2\t\t0.5\t0.5\t0.1\n".utf8).write(to: logs.appendingPathComponent("expert_weights_2.txt"))
        try assertFails(["score", "--from-logs", "logs", "--top-k", "2", "--experts", "4", "--out", "scores.json"],
                        "expert_weights_2.txt:1:", "not a multiple of top-k 2")
        try FileManager.default.removeItem(at: logs.appendingPathComponent("expert_weights_2.txt"))
        try Data("0\t1\t\t0.5\t0.5\n".utf8).write(to: logs.appendingPathComponent("expert_weights_3.txt"))
        try assertFails(["score", "--from-logs", "logs", "--top-k", "2", "--experts", "4", "--out", "scores.json"],
                        "layer(s) 2 are missing")
        try assertFails(["score", "--from-logs", "logs", "--normalize", "rows", "--out", "scores.json"], "--normalize")
        try assertFails(["score", "--out", "scores.json"], "--from-logs DIR, is required")
    }

    func testReferenceReproducedThroughTheCommandLine() throws {
        let dir = try MethodTestSupport.referenceRouting("intent")
        let scored = try esft(["score", "--from-logs", dir.path, "--normalize", "tokens", "--out", "scores.json"])
        XCTAssertEqual(scored.status, 0, scored.err)
        let selected = try esft(["select", "--scores", "scores.json", "--method", "token", "--threshold", "0.2", "--round", "4",
                                 "--out", "experts.json"])
        XCTAssertEqual(selected.status, 0, selected.err)
        XCTAssertEqual(try ExpertConfig.load(contentsOf: work.appendingPathComponent("experts.json")),
                       try ExpertConfig.load(contentsOf: dir.appendingPathComponent("expert_config.json")))
    }

    func testHelpTexts() throws {
        for command in ["score", "select"] {
            let r = try esft([command, "--help"])
            XCTAssertEqual(r.status, 0)
            XCTAssertTrue(r.out.hasPrefix("Usage: esft \(command)"), r.out)
        }
    }
}

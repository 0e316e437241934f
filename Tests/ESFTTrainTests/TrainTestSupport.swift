import ESFTKernels
import ESFTStore
import ESFTTestSupport
import Foundation
import XCTest

/// A tiny model (3 layers, 16 experts of which each token picks 4, in 4 shards), 40 random rows of 48
/// tokens and an ESFT expert config, made once per test class; and `esft train` on 1 rank (no mpirun)
/// or under real `mpirun -n R`.
class TrainTestCase: XCTestCase {
    class var tag: String { "train" }
    static var dirs: [String: URL] = [:]
    static let configsDir = Fixtures.root.deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("configs")
    // Experts of the tiny model's two MoE layers chosen so that, on 4 ranks, every rank owns some.
    static let expertConfig = #"{"experts": {"1": [0, 5, 13], "2": [7, 15]}, "shared_experts": false, "non_expert_modules": false}"#
    static let rows = 6, seqLen = 48

    override class func setUp() {
        let dir = try! Fixtures.tempDirectory(tag)
        dirs[tag] = dir
        let r = try! Executables.esft(["init", configsDir.appendingPathComponent("tiny.json").path, dir.appendingPathComponent("model").path,
                                       "--seed", "7", "--expert-shards", "4"])
        precondition(r.status == 0, r.stderr)
        try! TokenDatasets.writeRandom(to: dir.appendingPathComponent("data.h5"), rows: 40, seqLen: seqLen, tokenRange: 32..<127, seed: 3)
        try! Data(expertConfig.utf8).write(to: dir.appendingPathComponent("experts.json"))
    }
    override class func tearDown() { if let d = dirs[tag] { try? FileManager.default.removeItem(at: d) } }

    var dir: URL { Self.dirs[Self.tag]! }
    func path(_ name: String) -> String { dir.appendingPathComponent(name).path }

    struct Run { let out: URL; let stdout: String; let stderr: String; let status: Int32 }

    /// Runs `esft train` on `ranks` ranks (1: directly, without mpirun) into DIR/tag-ranks.
    @discardableResult
    func train(ranks: Int, _ mode: [String], tag: String, steps: Int = 10, batchRows: Int = TrainTestCase.rows, extra: [String] = [],
               environment: [String: String] = [:], expectSuccess: Bool = true,
               file: StaticString = #filePath, line: UInt = #line) throws -> Run {
        let out = dir.appendingPathComponent("\(tag)-\(ranks)")
        try? FileManager.default.removeItem(at: out)
        let args = ["train", "--model", path("model"), "--data", path("data.h5"), "--out", out.path, "--steps", "\(steps)",
                    "--batch-rows", "\(batchRows)", "--lr", "1e-4", "--aux-alpha", "0.001", "--eval-every", "5", "--threads", "1"] + mode + extra
        let status: Int32, stdout: String, stderr: String
        if ranks == 1 {
            let r = try Executables.esft(args, environment: environment)
            (status, stdout, stderr) = (r.status, r.stdout, r.stderr)
        } else {
            if let why = MPIRun.unavailableReason { throw XCTSkip(why) }
            let r = try MPIRun.run(ranks: ranks, arguments: args, environment: environment, timeout: 600)
            XCTAssertFalse(r.timedOut, "mpirun -n \(ranks) esft train hung", file: file, line: line)
            (status, stdout, stderr) = (r.status, r.stdout, r.stderr)
        }
        if expectSuccess { XCTAssertEqual(status, 0, "\(ranks) ranks: \(stderr)\n\(stdout)", file: file, line: line) }
        return Run(out: out, stdout: stdout, stderr: stderr, status: status)
    }

    func metrics(_ out: URL) throws -> [[String: Any]] {
        try String(contentsOf: out.appendingPathComponent("metrics.jsonl"), encoding: .utf8).split(separator: "\n")
            .map { try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] }
    }

    func tensors(_ file: URL) throws -> [String: [Float]] {
        try readSafetensorsFloats(file)
    }

    func trained(_ run: Run) throws -> [String: [Float]] { try tensors(run.out.appendingPathComponent("trained.safetensors")) }
}

import ESFTTestSupport
import Foundation
import XCTest

/// Every input under Tests/Fuzz (each target's seeds, and every input fuzzing once crashed on: scripts/fuzz.sh,
/// docs/testing.md "Fuzzing") replayed through its parser by the normal build of `esft-fuzz`: no crash, and each
/// target's seeds are accepted (so fuzzing starts from inputs that reach deep into the parser).
final class FuzzCorpusTests: XCTestCase {
    static let corpus = Fixtures.root.deletingLastPathComponent().appendingPathComponent("Fuzz")

    func testEveryCorpusReplaysWithoutACrash() throws {
        let tool = Executables.buildDirectory.appendingPathComponent("esft-fuzz")
        guard FileManager.default.isExecutableFile(atPath: tool.path) else { throw XCTSkip("esft-fuzz is not built (swift build)") }
        let targets = try FileManager.default.contentsOfDirectory(atPath: Self.corpus.path).sorted()
        XCTAssertEqual(targets, ["expert-config", "json", "manifest", "model-config", "model-directory", "routing-log",
                                 "safetensors", "scores", "token-dataset", "tokenizer"])
        for target in targets {
            let dir = Self.corpus.appendingPathComponent(target)
            let files = try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted()
            let seeds = files.filter { !$0.hasPrefix("crash-") }
            XCTAssertFalse(seeds.isEmpty, "\(target): seeds")
            let r = try Executables.run(tool, [target] + files.map { dir.appendingPathComponent($0).path },
                                        environment: ["SWIFT_BACKTRACE": "enable=no"])
            XCTAssertEqual(r.status, 0, "\(target): \(r.stderr.suffix(2000))")
            XCTAssert(r.stdout.contains("\(files.count) input(s) through \(target)") && r.stdout.contains("no crash"), "\(target): \(r.stdout)")
            // The seeds parse; the inputs that once crashed (crash-*) are refused with an error now.
            XCTAssert(r.stdout.contains(", \(seeds.count) accepted"), "\(target): \(r.stdout)")
        }
    }
}

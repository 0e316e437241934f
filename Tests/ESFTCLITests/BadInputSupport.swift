import ESFTData
import ESFTKernels
import ESFTTestSupport
import Foundation
import XCTest

/// Shared by the six bad-input test classes: a small working set made once per class (a tiny model
/// directory, a token dataset, an expert config, a scores file, a chat JSONL), and `refuse`, which runs one
/// hostile command and checks everything the issue asks of a refusal.
class BadInputTestCase: XCTestCase {
    class var tag: String { "bad" }
    static var dirs: [String: URL] = [:]
    static let repository = Fixtures.root.deletingLastPathComponent().deletingLastPathComponent()
    static var tinyConfig: URL { repository.appendingPathComponent("configs/tiny.json") }

    override class func setUp() {
        let dir = try! Fixtures.tempDirectory("bad-\(tag)")
        dirs[tag] = dir
        func esft(_ args: [String]) {
            let r = try! Executables.esft(args)
            precondition(r.status == 0, "esft \(args.joined(separator: " ")): \(r.stderr)")
        }
        esft(["init", tinyConfig.path, dir.appendingPathComponent("model").path, "--seed", "7", "--expert-shards", "2"])
        try! TokenDatasets.writeRandom(to: dir.appendingPathComponent("data.h5"), rows: 10, seqLen: 16, tokenRange: 32..<127, seed: 3)
        try! Data(#"{"experts": {"1": [0, 5], "2": [7]}, "shared_experts": false, "non_expert_modules": false}"#.utf8)
            .write(to: dir.appendingPathComponent("experts.json"))
        esft(["score", "--model", dir.appendingPathComponent("model").path, "--data", dir.appendingPathComponent("data.h5").path,
              "--tokens", "64", "--threads", "1", "--out", dir.appendingPathComponent("scores.json").path])
        try! Data((#"{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello there"}]}"# + "\n").utf8)
            .write(to: dir.appendingPathComponent("chat.jsonl"))
    }
    override class func tearDown() { if let d = dirs[tag] { try? FileManager.default.removeItem(at: d) } }

    var dir: URL { Self.dirs[Self.tag]! }
    func path(_ name: String) -> String { dir.appendingPathComponent(name).path }

    /// The tiny config with some fields changed (nil removes a field), written to DIR/name.
    @discardableResult
    func config(_ name: String, _ changes: [String: Any?]) throws -> String {
        var c = try JSONSerialization.jsonObject(with: Data(contentsOf: Self.tinyConfig)) as! [String: Any]
        for (k, v) in changes { c[k] = v }
        let url = dir.appendingPathComponent(name)
        try JSONSerialization.data(withJSONObject: c, options: [.sortedKeys]).write(to: url)
        return url.path
    }

    /// A model directory whose config.json is `configPath` and whose weights are the tiny model's (linked).
    func modelDirectory(_ name: String, config configPath: String) throws -> String {
        let url = dir.appendingPathComponent(name), fm = FileManager.default
        try fm.createDirectory(at: url, withIntermediateDirectories: true)
        for f in try fm.contentsOfDirectory(atPath: path("model")) where f != "config.json" {
            try fm.createSymbolicLink(atPath: url.appendingPathComponent(f).path, withDestinationPath: path("model/\(f)"))
        }
        try fm.copyItem(atPath: configPath, toPath: url.appendingPathComponent("config.json").path)
        return url.path
    }

    /// Every file under DIR (hidden ones included) with its bytes: the state a refusal must leave unchanged.
    func snapshot() throws -> [String: Data] {
        var out: [String: Data] = [:]
        let base = dir.resolvingSymlinksInPath().path
        guard let walker = FileManager.default.enumerator(atPath: base) else { return out }
        for case let relative as String in walker {
            let full = base + "/" + relative
            var isDirectory: ObjCBool = false
            _ = FileManager.default.fileExists(atPath: full, isDirectory: &isDirectory)
            out[relative] = isDirectory.boolValue ? Data() : (FileManager.default.contents(atPath: full) ?? Data("unreadable".utf8))
        }
        return out
    }

    /// Runs `esft ARGS` and asserts a refusal as docs/cli.md states it: exit status 1, no Swift runtime trap,
    /// one `esft <command>: error:` line naming each of `mentions` (the file and the field), and the working
    /// directory exactly as before (nothing new, nothing removed, every input byte-identical).
    @discardableResult
    func refuse(_ args: [String], mentions: [String], status expected: Int32 = 1, file: StaticString = #filePath, line: UInt = #line) throws -> String {
        let before = try snapshot()
        let r = try Executables.esft(args)
        let what = "esft \(args.joined(separator: " "))"
        XCTAssertEqual(r.status, expected, "\(what): \(r.stderr)", file: file, line: line)
        XCTAssertFalse(r.stderr.contains("Fatal error"), "\(what) trapped: \(r.stderr)", file: file, line: line)
        XCTAssertFalse(r.stderr.contains("NSCocoaErrorDomain") || r.stderr.contains("Error Domain="), "\(what): raw Foundation error: \(r.stderr)", file: file, line: line)
        XCTAssertTrue(r.stderr.contains("esft \(args[0]): error: "), "\(what): not the error form: \(r.stderr)", file: file, line: line)
        for m in mentions { XCTAssertTrue(r.stderr.contains(m), "\(what): message does not name \(m): \(r.stderr)", file: file, line: line) }
        let after = try snapshot()
        XCTAssertEqual(Set(after.keys).subtracting(before.keys).sorted(), [], "\(what) left new files behind", file: file, line: line)
        XCTAssertEqual(Set(before.keys).subtracting(after.keys).sorted(), [], "\(what) removed files", file: file, line: line)
        for (name, data) in before where after[name] != nil && after[name] != data {
            XCTFail("\(what) changed \(name)", file: file, line: line)
        }
        return r.stderr
    }
}

import ESFTBase
import Foundation
import XCTest

final class AtomicWriteTests: XCTestCase {
    private var dir: URL!

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("esft-atomic-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    private var entries: [String] { ((try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []).sorted() }

    func testTemporaryIsAHiddenSiblingPerProcess() {
        let url = dir.appendingPathComponent("out.json")
        let t = AtomicWrite.temporarySibling(of: url)
        XCTAssertEqual(t.deletingLastPathComponent().path, dir.path)
        XCTAssertEqual(t.lastPathComponent, ".out.json.tmp-\(getpid())")
    }

    func testFileAppearsOnlyWhenCompleteAndTheTemporaryIsGone() throws {
        let url = dir.appendingPathComponent("out.bin")
        try AtomicWrite.write(to: url) { handle in
            try handle.write(contentsOf: Data([1, 2, 3]))
            XCTAssertFalse(FileManager.default.fileExists(atPath: url.path), "nothing at the name while writing")
            XCTAssertEqual(self.entries, [AtomicWrite.temporarySibling(of: url).lastPathComponent])
            try handle.write(contentsOf: Data([4]))
        }
        XCTAssertEqual(try Data(contentsOf: url), Data([1, 2, 3, 4]))
        XCTAssertEqual(entries, ["out.bin"])
    }

    func testReplacingKeepsTheOldFileUntilTheNewOneIsWhole() throws {
        let url = dir.appendingPathComponent("out.txt")
        try AtomicWrite.write(Data("old".utf8), to: url)
        try AtomicWrite.write(to: url) { handle in
            try handle.write(contentsOf: Data("ne".utf8))
            XCTAssertEqual(try Data(contentsOf: url), Data("old".utf8))
            try handle.write(contentsOf: Data("w".utf8))
        }
        XCTAssertEqual(try Data(contentsOf: url), Data("new".utf8))
        XCTAssertEqual(entries, ["out.txt"])
    }

    func testFailureLeavesNothing() throws {
        let url = dir.appendingPathComponent("out.bin")
        XCTAssertThrowsError(try AtomicWrite.write(to: url) { handle in
            try handle.write(contentsOf: Data([9, 9]))
            throw ESFTError("disk on fire")
        }) { XCTAssertEqual("\($0)", "disk on fire", "the body's own error passes through") }
        XCTAssertEqual(entries, [])
    }

    func testUnwritableDirectoryNamesTheFile() {
        let url = dir.appendingPathComponent("no-such-dir/out.bin")
        XCTAssertThrowsError(try AtomicWrite.write(Data([1]), to: url)) {
            XCTAssert("\($0)".hasPrefix("\(url.path): cannot create"), "\($0)")
        }
        XCTAssertEqual(entries, [])
    }

    func testFailedRenameRemovesTheTemporary() throws {
        let temporary = dir.appendingPathComponent("t")
        try Data([1]).write(to: temporary)
        let target = dir.appendingPathComponent("missing/x")
        XCTAssertThrowsError(try AtomicWrite.renameIntoPlace(temporary, as: target)) {
            XCTAssert("\($0)".hasPrefix("\(target.path): cannot rename"), "\($0)")
        }
        XCTAssertEqual(entries, [])
    }

    func testDirectoriesAreBuiltUnderTheTemporaryName() throws {
        let out = dir.appendingPathComponent("model")
        try AtomicWrite.create(out) { tmp in
            try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
            try Data("{}".utf8).write(to: tmp.appendingPathComponent("config.json"))
            XCTAssertFalse(FileManager.default.fileExists(atPath: out.path))
        }
        XCTAssertEqual(try Data(contentsOf: out.appendingPathComponent("config.json")), Data("{}".utf8))
        XCTAssertEqual(entries, ["model"])
        XCTAssertThrowsError(try AtomicWrite.create(dir.appendingPathComponent("half")) { tmp in
            try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
            try Data([1]).write(to: tmp.appendingPathComponent("part"))
            throw ESFTError("stop")
        })
        XCTAssertEqual(entries, ["model"], "the half-built directory is removed")
    }

    func testWriteFilesLeavesAllOrNone() throws {
        let a = dir.appendingPathComponent("a.json"), b = dir.appendingPathComponent("sub/b.json")
        XCTAssertThrowsError(try AtomicWrite.writeFiles([(a, Data("a".utf8)), (b, Data("b".utf8))]))
        XCTAssertEqual(entries, [], "a.json was written, then removed when b.json failed")
        let c = dir.appendingPathComponent("c.json")
        try AtomicWrite.writeFiles([(a, Data("a".utf8)), (c, Data("c".utf8))])
        XCTAssertEqual(entries, ["a.json", "c.json"])
        XCTAssertEqual(try Data(contentsOf: c), Data("c".utf8))
    }
}

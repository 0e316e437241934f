import ESFTKernels
import ESFTMethod
import Foundation
import XCTest

final class ReferenceLogTests: XCTestCase {
    /// Writes expert_weights_<layer>.txt files with the given contents into a fresh directory.
    func logs(_ files: [Int: String]) throws -> URL {
        let dir = try MethodTestSupport.tempDirectory()
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        for (layer, text) in files {
            try Data(text.utf8).write(to: dir.appendingPathComponent("expert_weights_\(layer).txt"))
        }
        return dir
    }

    // K = 2, E = 4. Line 1: tokens (0,1) (0,2); line 2: token (3,1).
    let layer1 = "0\t1\t0\t2\t\t0.5\t0.3\t0.6\t0.2\n3\t1\t\t0.7\t0.1\n"
    let layer2 = "1\t2\t3\t0\t\t0.25\t0.25\t0.4\t0.1\n2\t3\t\t0.5\t0.5\n"

    func testParsesAndScores() throws {
        let dir = try logs([1: layer1, 2: layer2])
        let logs = try ReferenceRoutingLogs(directory: dir, topK: 2, experts: 4)
        XCTAssertEqual(logs.layers, [1, 2])
        XCTAssertEqual(logs.logs[0].tokensPerSample, [2, 1])
        XCTAssertEqual(logs.logs[0].ids, [0, 1, 0, 2, 3, 1])
        XCTAssertEqual(logs.logs[0].weights, [0.5, 0.3, 0.6, 0.2, 0.7, 0.1])
        let stats = try logs.statistics()
        let pooled = try RelevanceScores(statistics: stats, normalize: .tokens, source: "logs")
        assertClose(pooled.gate[1]!, [1.1 / 3, 0.4 / 3, 0.2 / 3, 0.7 / 3])
        let perSample = try RelevanceScores(statistics: stats, normalize: .samples, source: "logs")
        assertClose(perSample.token[1]!, [0.25, 0.375, 0.125, 0.25])
        // Layer 2: sample 1 (L = 2) gives (0.05, 0.125, 0.125, 0.2), sample 2 (L = 1) gives (0, 0, 0.5, 0.5).
        assertClose(perSample.gate[2]!, [0.025, 0.0625, 0.3125, 0.35])
        XCTAssertTrue(logs.digest.hasPrefix("fnv1a64:"))
        XCTAssertNotEqual(try ReferenceRoutingLogs(directory: self.logs([1: layer1, 2: layer1]), topK: 2, experts: 4).digest, logs.digest)
    }

    func testNumbersWithExponentsAndCRLF() throws {
        let dir = try logs([1: "0\t1\t\t1e-04\t0.9999\r\n"])
        let log = try ReferenceRoutingLogs(directory: dir, topK: 2, experts: 4).logs[0]
        XCTAssertEqual(log.weights, [0.0001, 0.9999])
    }

    func testRaggedLines() throws {
        XCTAssertESFTError(try ReferenceRoutingLogs(directory: logs([1: layer1, 2: "1\t2\t3\t\t0.1\t0.2\t0.3\n"]), topK: 2, experts: 4),
                           "expert_weights_2.txt:1:", "3 expert ids is not a multiple of top-k 2")
        XCTAssertESFTError(try ReferenceRoutingLogs(directory: logs([1: layer1, 2: "1\t2\t\t0.1\n"]), topK: 2, experts: 4),
                           "expert_weights_2.txt:1:", "2 expert ids but 1 gate weights")
        XCTAssertESFTError(try ReferenceRoutingLogs(directory: logs([1: "0\t1\t\t0.5\t0.5\n1\t2\t0.1\t0.2\n"]), topK: 2, experts: 4),
                           "expert_weights_1.txt:2:", "field 3 '0.1' is not an expert id")
        XCTAssertESFTError(try ReferenceRoutingLogs(directory: logs([1: "0\t1\t0.5\t0.5\n"]), topK: 2, experts: 4),
                           "expert_weights_1.txt:1:", "field 3 '0.5' is not an expert id")
        XCTAssertESFTError(try ReferenceRoutingLogs(directory: logs([1: "0\t1\n"]), topK: 2, experts: 4),
                           "expert_weights_1.txt:1:", "no empty field")
        XCTAssertESFTError(try ReferenceRoutingLogs(directory: logs([1: "0\t1\t\t0.5\tabc\n"]), topK: 2, experts: 4),
                           "expert_weights_1.txt:1:", "field 5 'abc' is not a number")
        XCTAssertESFTError(try ReferenceRoutingLogs(directory: logs([1: "0\t4\t\t0.5\t0.5\n"]), topK: 2, experts: 4),
                           "expert_weights_1.txt:1:", "expert id 4 is outside 0...3")
        XCTAssertESFTError(try ReferenceRoutingLogs(directory: logs([1: "1\t1\t\t0.5\t0.5\n"]), topK: 2, experts: 4),
                           "expert_weights_1.txt:1:", "token 1 lists an expert twice")
        XCTAssertESFTError(try ReferenceRoutingLogs(directory: logs([1: "0\t1\t\t0.5\t0.5\n\n0\t1\t\t0.5\t0.5\n"]), topK: 2, experts: 4),
                           "expert_weights_1.txt:2:", "empty line")
        XCTAssertESFTError(try ReferenceRoutingLogs(directory: logs([1: "0\t1\t\t0.5\t1.5\n"]), topK: 2, experts: 4),
                           "expert_weights_1.txt:1:", "outside [0, 1]")
    }

    func testMissingAndInconsistentLayers() throws {
        XCTAssertESFTError(try ReferenceRoutingLogs(directory: logs([1: layer1, 3: layer1, 5: layer1]), topK: 2, experts: 4),
                           "layer(s) 2, 4 are missing")
        XCTAssertESFTError(try ReferenceRoutingLogs(directory: logs([2: layer1]), topK: 2, experts: 4), "layer(s) 1 are missing")
        XCTAssertESFTError(try ReferenceRoutingLogs(directory: logs([:]), topK: 2, experts: 4), "no routing logs")
        XCTAssertESFTError(try ReferenceRoutingLogs(directory: logs([1: layer1, 2: "0\t1\t\t0.5\t0.5\n"]), topK: 2, experts: 4),
                           "expert_weights_2.txt: 1 samples (lines), but", "expert_weights_1.txt has 2")
        XCTAssertESFTError(try ReferenceRoutingLogs(directory: logs([1: layer1, 2: "0\t1\t\t0.5\t0.5\n0\t1\t0\t2\t\t0.1\t0.1\t0.1\t0.1\n"]),
                                                    topK: 2, experts: 4),
                           "expert_weights_2.txt:1: 1 tokens, but", "expert_weights_1.txt:1 has 2")
        XCTAssertESFTError(try ReferenceRoutingLogs(directory: URL(fileURLWithPath: "/nonexistent-logs"), topK: 2, experts: 4),
                           "/nonexistent-logs", "cannot list")
    }
}

import ESFTKernels
import ESFTMethod
import Foundation
import XCTest

final class ScoresFileTests: XCTestCase {
    func sample() -> RelevanceScores {
        var s = MethodTestSupport.scores(token: [1: [0.1, 0.7, 0.2], 2: [1.0 / 3, 1e-05, 0.6666666666666667], 10: [0, 0, 1]],
                                         fingerprint: "fnv1a64:0123456789abcdef")
        s.metadata.dataDigest = "fnv1a64:fedcba9876543210"
        s.metadata.seed = 5934875
        s.metadata.ranks = 4
        s.metadata.source = "a \"quoted\" source\twith tab"
        return s
    }

    func testRoundTripIsExact() throws {
        let s = sample()
        let back = try RelevanceScores(jsonData: s.jsonData(), source: "scores.json")
        XCTAssertEqual(back, s, "every Double reads back bit for bit")
    }

    func testShapeMatchesTheReferenceSummary() throws {
        let obj = try JSONSerialization.jsonObject(with: sample().jsonData()) as! [String: Any]
        XCTAssertEqual(obj["format"] as? String, "esft-scores")
        XCTAssertEqual(obj["version"] as? Int, 1)
        let token = obj["token_scores"] as! [String: [String: Double]]
        XCTAssertEqual(Set(token.keys), ["1", "2", "10"])
        XCTAssertEqual(token["1"], ["0": 0.1, "1": 0.7, "2": 0.2])
        let meta = obj["metadata"] as! [String: Any]
        for key in ["normalize", "samples", "tokens", "top_k", "experts", "layers", "model_fingerprint", "data_digest",
                    "seed", "ranks", "source"] {
            XCTAssertNotNil(meta[key], key)
        }
    }

    /// The file with one edit applied to its parsed JSON.
    func edited(_ edit: (inout [String: Any]) -> Void) throws -> Data {
        var obj = try JSONSerialization.jsonObject(with: sample().jsonData()) as! [String: Any]
        edit(&obj)
        return try JSONSerialization.data(withJSONObject: obj)
    }

    func testErrors() throws {
        func load(_ data: Data) throws -> RelevanceScores { try RelevanceScores(jsonData: data, source: "s.json") }
        XCTAssertESFTError(try load(edited { $0["format"] = "esft-checkpoint" }), "s.json", "format", "esft-checkpoint", "esft-scores")
        XCTAssertESFTError(try load(edited { $0["format"] = nil }), "s.json", "no 'format' field")
        XCTAssertESFTError(try load(edited { $0["version"] = 2 }), "s.json", "version", "is 2", "reads version 1")
        XCTAssertESFTError(try load(edited { obj in
            var gate = obj["gate_scores"] as! [String: Any]
            gate["2"] = nil
            obj["gate_scores"] = gate
        }), "s.json", "gate_scores", "missing layer 2")
        XCTAssertESFTError(try load(edited { obj in
            var token = obj["token_scores"] as! [String: Any]
            token["7"] = ["0": 1]
            obj["token_scores"] = token
        }), "s.json", "token_scores", "layer '7'")
        XCTAssertESFTError(try load(edited { obj in
            var token = obj["token_scores"] as! [String: [String: Any]]
            token["1"]!["1"] = "0.7"
            obj["token_scores"] = token
        }), "s.json", "token_scores.1.1", "must be a finite number", "\"0.7\"")
        XCTAssertESFTError(try load(edited { obj in
            var token = obj["token_scores"] as! [String: [String: Any]]
            token["1"]!["2"] = nil
            obj["token_scores"] = token
        }), "s.json", "token_scores.1.2", "missing")
        XCTAssertESFTError(try load(edited { obj in
            var meta = obj["metadata"] as! [String: Any]
            meta["normalize"] = "rows"
            obj["metadata"] = meta
        }), "s.json", "metadata.normalize", "samples or tokens")
        XCTAssertESFTError(try load(Data("not json".utf8)), "s.json", "not valid JSON")
    }

    func testSeventeenDigitScoresReadBackExactly() throws {
        // Values JSONSerialization on Linux reads back a few ulps off.
        let values = [0.004276489905132578, 0.0018073096570177564, 0.0028898808075894004, 0.0033840428119678895]
        let s = MethodTestSupport.scores(token: [1: values])
        XCTAssertEqual(try RelevanceScores(jsonData: s.jsonData(), source: "s.json").token[1]!.map(\.bitPattern),
                       values.map(\.bitPattern))
    }

    func testSyntaxErrorsGiveLineAndColumn() {
        XCTAssertESFTError(try RelevanceScores(jsonData: Data("{\n  \"format\": \"esft-scores\",\n  \"version\": 1,,\n}".utf8), source: "s.json"),
                           "s.json: not valid JSON at line 3, column 16", "Invalid value")
        XCTAssertESFTError(try RelevanceScores(jsonData: Data(#"{"format": "esft-scores" "#.utf8), source: "s.json"),
                           "s.json: not valid JSON", "end of file")
        XCTAssertESFTError(try RelevanceScores(jsonData: Data(#"{"format": "esft-\u00e9", "version": 1}"#.utf8), source: "s.json"),
                           "'esft-é'")
    }

    func testLoadFromMissingFile() {
        XCTAssertESFTError(try RelevanceScores.load(contentsOf: URL(fileURLWithPath: "/nonexistent/scores.json")),
                           "/nonexistent/scores.json", "cannot read")
    }
}

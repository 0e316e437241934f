import ESFTTestSupport
import Foundation
import XCTest

/// `esft generate` and `esft eval` through the binary on a tiny random model with the byte tokenizer:
/// eval's predictions are generate's completions, the same on 1 and 2 ranks and in record order; the loss
/// metric's summary is its lines' weighted mean; bad input leaves nothing behind.
final class EvalCommandTests: XCTestCase {
    var work: URL!
    var model: String { work.appendingPathComponent("model").path }
    let prompts = ["User: 打开空调\n\nAssistant:", "User: hi\n\nAssistant:", "x", "User: 明天的天气怎么样？\n\nAssistant:"]

    override func setUpWithError() throws {
        work = try Fixtures.tempDirectory("esft-eval")
        let config = Fixtures.root.deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("configs/tiny.json")
        let r = try Executables.esft(["init", config.path, model, "--seed", "3"])
        XCTAssertEqual(r.status, 0, r.stderr)
    }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: work) }

    func write(_ name: String, _ lines: [[String: Any]]) throws -> String {
        let text = try lines.map { String(decoding: try JSONSerialization.data(withJSONObject: $0, options: [.sortedKeys]), as: UTF8.self) }
        let url = work.appendingPathComponent(name)
        try (text.joined(separator: "\n") + "\n").write(to: url, atomically: true, encoding: .utf8)
        return url.path
    }

    func jsonLines(_ path: String) throws -> [[String: Any]] {
        try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").map {
            try XCTUnwrap(JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])
        }
    }

    func eval(_ args: [String], ranks: Int? = nil) throws -> (status: Int32, stdout: String, stderr: String) {
        let all = ["eval", "--model", model, "--tokenizer", "bytes", "--threads", "1"] + args
        if let ranks {
            if let why = MPIRun.unavailableReason { throw XCTSkip(why) }
            let r = try MPIRun.run(ranks: ranks, arguments: all, timeout: 300)
            XCTAssertFalse(r.timedOut)
            return (r.status, r.stdout, r.stderr)
        }
        let r = try Executables.esft(all)
        return (r.status, r.stdout, r.stderr)
    }

    func testEvalPredictionsAreGenerateCompletionsOnAnyRankCount() throws {
        let records = prompts.enumerated().map { ["prompt": $0.element, "raw_answers": [#"{"intent": "x", "slots": {}}"#], "idx": $0.offset] as [String: Any] }
        let data = try write("eval.jsonl", records)
        let gen = work.appendingPathComponent("gen.jsonl").path
        let g = try Executables.esft(["generate", "--model", model, "--tokenizer", "bytes", "--prompts", data, "--max-new-tokens", "12",
                                      "--batch", "3", "--out", gen, "--threads", "1"])
        XCTAssertEqual(g.status, 0, g.stderr)
        let completions = try jsonLines(gen)
        XCTAssertEqual(completions.count, prompts.count)
        for c in completions {
            let tokens = try XCTUnwrap(c["tokens"] as? [Int]), stopped = try XCTUnwrap(c["stopped"] as? Bool)
            XCTAssert(tokens.count == 12 || (stopped && tokens.last == 257), "12 new tokens, or fewer ending in EOS (257): \(tokens)")
        }
        var outputs: [String] = []
        for ranks in [nil, 2] as [Int?] {
            let out = work.appendingPathComponent("r\(ranks ?? 1).jsonl").path
            let r = try eval(["--data", data, "--metric", "exact-json", "--out", out, "--max-new-tokens", "12", "--batch", "3"], ranks: ranks)
            XCTAssertEqual(r.status, 0, r.stderr)
            let lines = try jsonLines(out)
            XCTAssertEqual(lines.count, prompts.count)
            for (i, line) in lines.enumerated() {
                let example = try XCTUnwrap(line["example"] as? [String: Any])
                XCTAssertEqual(example["prompt"] as? String, prompts[i], "record order")
                XCTAssertEqual(example["raw_prediction"] as? String, completions[i]["completion"] as? String, "eval predicts what generate completes")
                XCTAssertEqual(line["score"] as? Int, 0, "a random model does not produce the answer")
            }
            let summary = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out.replacingOccurrences(of: ".jsonl", with: ".summary.json")))) as? [String: Any])
            XCTAssertEqual(summary["records"] as? Int, prompts.count)
            XCTAssertEqual(summary["ranks"] as? Int, ranks ?? 1)
            outputs.append(try String(contentsOfFile: out, encoding: .utf8))
        }
        XCTAssertEqual(outputs[0], outputs[1], "1 and 2 ranks write the same bytes")
    }

    /// Each record runs alone, so its loss does not depend on the rank that ran it: 1 and 2 ranks write the
    /// same lines, and the summary's loss is Σ loss·tokens / Σ tokens of the lines (fp64 sums of the same
    /// terms in another order: 1e-12 relative).
    func testLossMetricIsTheWeightedMeanOfItsLinesOnAnyRankCount() throws {
        var records: [[String: Any]] = []
        for (i, p) in prompts.enumerated() {
            records.append(["messages": [["role": "user", "content": p], ["role": "assistant", "content": "答案 \(i)"]]])
        }
        records.append(["text": "plain text is all trained"])
        let data = try write("chat.jsonl", records)
        var seen: [String] = []
        for ranks in [nil, 2] as [Int?] {
            let out = work.appendingPathComponent("loss\(ranks ?? 1).jsonl").path
            let r = try eval(["--data", data, "--metric", "loss", "--out", out], ranks: ranks)
            XCTAssertEqual(r.status, 0, r.stderr)
            let lines = try jsonLines(out)
            XCTAssertEqual(lines.map { $0["line"] as? Int }, Array(1...records.count))
            let summary = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out.replacingOccurrences(of: ".jsonl", with: ".summary.json")))) as? [String: Any])
            let tokens = lines.map { Double($0["target_tokens"] as! Int) }, losses = lines.map { $0["loss"] as! Double }
            let weighted = zip(losses, tokens).map(*).reduce(0, +) / tokens.reduce(0, +)
            let loss = try XCTUnwrap(summary["loss"] as? Double)
            XCTAssertEqual(loss, weighted, accuracy: 1e-12 * weighted)
            XCTAssertEqual(summary["target_tokens"] as? Int, Int(tokens.reduce(0, +)))
            XCTAssertGreaterThan(loss, 0)
            seen.append(try String(contentsOfFile: out, encoding: .utf8))
        }
        XCTAssertEqual(seen[0], seen[1])
    }

    func testRescoreAndBadInput() throws {
        let answer = #"{"intent": "A", "slots": {"k": "v"}}"#
        let results = try write("results.jsonl", [
            ["example": ["prompt": "p", "raw_prediction": answer + "。", "raw_answers": [answer]], "score": 1],
            ["example": ["prompt": "p", "raw_prediction": "nope", "raw_answers": [answer]], "score": 1],  // recorded wrongly
        ])
        let out = work.appendingPathComponent("re.jsonl").path
        let r = try Executables.esft(["eval", "--rescore", results, "--metric", "exact-json", "--out", out])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(try jsonLines(out).map { $0["score"] as? Int }, [1, 0])
        XCTAssertTrue(r.stdout.contains("\"recorded_scores_agreeing\" : 1"), r.stdout)

        // --out equal to --data, an unknown metric, a record without raw_answers: errors, nothing written.
        let data = try write("bad.jsonl", [["prompt": "p"]])
        let before = try Data(contentsOf: URL(fileURLWithPath: data))
        for (args, expect) in [(["--data", data, "--metric", "exact-json", "--out", data], "is the same file as the input --data"),
                               (["--data", data, "--metric", "bleu", "--out", work.appendingPathComponent("o1.jsonl").path], "--metric"),
                               (["--data", data, "--metric", "exact-json", "--out", work.appendingPathComponent("o2.jsonl").path], "raw_answers")] {
            let e = try eval(args)
            XCTAssertNotEqual(e.status, 0)
            XCTAssertTrue(e.stderr.contains(expect), "\(args): \(e.stderr)")
        }
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: data)), before, "the input is untouched")
        let left = try FileManager.default.contentsOfDirectory(atPath: work.path).filter { $0.hasPrefix("o1") || $0.hasPrefix("o2") || $0.hasPrefix(".o") }
        XCTAssertEqual(left, [], "nothing half-written")
    }
}

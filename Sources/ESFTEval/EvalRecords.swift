import ESFTBase
import Foundation

/// One record of the reference's evaluation files (datasets/eval/*.jsonl): a few-shot prompt ending in
/// "\n\nAssistant:" and the reference answers (`raw_answers[0]` is what the metrics compare with).
public struct EvalRecord: Equatable, Sendable {
    public let line: Int
    public let prompt: String
    public let rawAnswers: [String]

    /// Every non-blank line, checked: `prompt` a string, `raw_answers` a non-empty list of strings.
    public static func load(_ path: String) throws -> [EvalRecord] {
        try jsonLines(path, what: "eval record").map { line, r in
            let prompt = try r.field("prompt").string()
            let answers = try r.field("raw_answers").items().map { try $0.string() }
            guard !answers.isEmpty else { throw ESFTError("\(r.source): raw_answers is empty (the metric compares with raw_answers[0])") }
            return EvalRecord(line: line, prompt: prompt, rawAnswers: answers)
        }
    }
}

/// The non-blank lines of a JSONL file, each parsed (its source "FILE:LINE" for messages), with their line
/// numbers; an unreadable or empty file is an error naming it.
public func jsonLines(_ path: String, what: String) throws -> [(line: Int, reader: JSONReader)] {
    let data: Data
    do { data = try Data(contentsOf: URL(fileURLWithPath: path)) } catch {
        throw ESFTError("\(path): cannot read (\(error.localizedDescription))")
    }
    var out: [(line: Int, reader: JSONReader)] = []
    for (i, line) in data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).enumerated()
    where !line.allSatisfy({ $0 == 0x20 || $0 == 0x09 || $0 == 0x0D }) {
        out.append((i + 1, try JSONReader.parse(Data(line), source: "\(path):\(i + 1)", what: what)))
    }
    guard !out.isEmpty else { throw ESFTError("\(path): no \(what)s (the file is empty)") }
    return out
}

/// One line of exact-json results, as the reference writes them: `{"example": {"prompt", "raw_prediction",
/// "raw_answers"}, "score"}`, plus `"note"` when the prediction could not be compared.
public func exactJSONResultLine(prompt: String, prediction: String, answers: [String], result: ExactJSONMetric.Result) -> String {
    var text = "{\"example\": {\"prompt\": \(JSONText.string(prompt)), \"raw_prediction\": \(JSONText.string(prediction)), "
        + "\"raw_answers\": [\(answers.map(JSONText.string).joined(separator: ", "))]}, \"score\": \(result.score == 1 ? "1" : "0")"
    if let note = result.note { text += ", \"note\": \(JSONText.string(note))" }
    return text + "}"
}

/// Rank r's records of n, round-robin (r, r+R, ...): the reference's `dataset[rank::world_size]`.
public func roundRobinShare(count n: Int, rank: Int, ranks: Int) -> [Int] { Array(stride(from: rank, to: n, by: ranks)) }

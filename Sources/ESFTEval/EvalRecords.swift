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
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path)) } catch {
            throw ESFTError("\(path): cannot read (\(error.localizedDescription))")
        }
        var records: [EvalRecord] = []
        for (i, line) in data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).enumerated() {
            guard !line.allSatisfy({ $0 == 0x20 || $0 == 0x09 || $0 == 0x0D }) else { continue }
            let where_ = "\(path):\(i + 1)"
            let r = try JSONReader.parse(Data(line), source: where_, what: "eval record")
            let prompt = try r.field("prompt").string()
            let answers = try r.field("raw_answers").items().map { try $0.string() }
            guard !answers.isEmpty else { throw ESFTError("\(where_): raw_answers is empty (the metric compares with raw_answers[0])") }
            records.append(EvalRecord(line: i + 1, prompt: prompt, rawAnswers: answers))
        }
        guard !records.isEmpty else { throw ESFTError("\(path): no records (the file is empty)") }
        return records
    }
}

/// Rank r's records of n, round-robin (r, r+R, ...): the reference's `dataset[rank::world_size]`.
public func roundRobinShare(count n: Int, rank: Int, ranks: Int) -> [Int] { Array(stride(from: rank, to: n, by: ranks)) }

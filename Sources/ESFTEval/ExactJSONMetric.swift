import ESFTBase
import Foundation

/// The ESFT reference's intent metric (benchmarks.py, IntentEvaluator): the prediction is cleaned up
/// (stripped, '.'/'。' trimmed, a ```json block taken, the first non-empty line kept), parsed as JSON, and
/// scores 1 when its "intent" equals the answer's and its set of slots equals the answer's exactly (list
/// values compared as sorted lists of strings; spaces removed from the prediction's values, as the
/// reference does, not from the answer's), else 0.
///
/// Where the reference would raise (a prediction that parses to something other than an object, an
/// answer that is not valid JSON) we score 0 and say why; where it compares Python reprs of tuples with
/// plain strings we compare typed values (only a string spelled like a tuple repr could tell them apart).
public enum ExactJSONMetric {
    public struct Result: Equatable, Sendable {
        public let score: Double
        /// The cleaned-up prediction that was parsed.
        public let prediction: String
        /// Why the score is 0 when the prediction could not be compared (nil otherwise).
        public let note: String?
    }

    public static func score(rawPrediction: String, answer: String) -> Result {
        let pred = postProcess(rawPrediction)
        func zero(_ why: String) -> Result { Result(score: 0, prediction: pred, note: why) }
        guard case .object(let truth)? = try? JSONValue.parse(Data(answer.utf8), source: "answer") else {
            return zero("the answer is not a JSON object")
        }
        guard let parsed = try? JSONValue.parse(Data(pred.utf8), source: "prediction") else { return zero("the prediction is not valid JSON") }
        guard case .object(let guess) = parsed else { return zero("the prediction is JSON but not an object") }
        let intentEqual = pythonEqual(guess["intent"] ?? .string(""), truth["intent"] ?? .string(""))
        guard let truthSlots = slots(truth["slots"], removingSpaces: false) else { return zero("the answer's slots are not an object") }
        guard let guessSlots = slots(guess["slots"], removingSpaces: true) else {
            return zero("the prediction's slots are not an object of strings or lists")
        }
        return Result(score: intentEqual && guessSlots == truthSlots ? 1 : 0, prediction: pred, note: nil)
    }

    /// IntentEvaluator.post_process.
    public static func postProcess(_ raw: String) -> String {
        var pred = raw.pythonStripped
        if pred.isEmpty { pred = "None" }
        pred = pred.pythonStripped(of: [".", "。"])
        if let fence = pred.range(of: "```json") {
            let rest = pred[fence.upperBound...]
            if let close = rest.range(of: "```") { pred = String(rest[..<close.lowerBound]) } else { pred = "{}" }
        }
        if pred.contains("\n") { pred = pred.split(separator: "\n", omittingEmptySubsequences: true).first.map(String.init) ?? "" }
        return pred.pythonStripped(of: [".", "。"])
    }

    /// A slot value as the reference compares it: lists become sorted lists of str(element).
    enum SlotValue: Equatable { case list([String]), scalar(JSONValue) }

    /// The reference's set of (key, value) pairs; keys are unique, so a dictionary compares the same. nil
    /// when the reference would fail (or, for the prediction, score 0): slots not an object, or a
    /// prediction value that is neither a string nor a list.
    static func slots(_ value: JSONValue?, removingSpaces: Bool) -> [String: SlotValue]? {
        guard let value else { return [:] }
        guard case .object(let object) = value else { return nil }
        var canonical: [String: SlotValue] = [:]
        for (k, v) in object {
            switch v {
            case .array(let items):
                let strings = items.map { removingSpaces ? pythonStr($0).replacingOccurrences(of: " ", with: "") : pythonStr($0) }
                canonical[k] = .list(strings.sorted())
            case .string(let s):
                canonical[k] = .scalar(.string(removingSpaces ? s.replacingOccurrences(of: " ", with: "") : s))
            default:
                if removingSpaces { return nil }  // v.replace(...) raises on a non-string: the reference's except → 0
                canonical[k] = .scalar(v)
            }
        }
        return canonical
    }

    /// Python `str()` of a parsed JSON value (strings as themselves; numbers, booleans and null as Python
    /// prints them; containers as JSON text, which only matters for nested lists).
    static func pythonStr(_ v: JSONValue) -> String {
        switch v {
        case .string(let s): return s
        case .bool(let b): return b ? "True" : "False"
        case .null: return "None"
        case .number(let text): return text
        case .array(let items): return "[" + items.map(pythonStr).joined(separator: ", ") + "]"
        case .object(let members):
            return "{" + members.sorted { $0.key < $1.key }.map { "\(JSONText.string($0.key)): \(pythonStr($0.value))" }.joined(separator: ", ") + "}"
        }
    }

    /// Python `==` on parsed JSON (numbers by value; True == 1).
    static func pythonEqual(_ a: JSONValue, _ b: JSONValue) -> Bool {
        func number(_ v: JSONValue) -> Double? {
            switch v {
            case .number(let t): return Double(t)
            case .bool(let x): return x ? 1 : 0
            default: return nil
            }
        }
        if let x = number(a), let y = number(b) { return x == y }
        return a == b
    }
}

import ESFTEval
import XCTest

/// The reference's intent metric (benchmarks.py IntentEvaluator), rule by rule. Beyond these cases,
/// `esft eval --rescore` on the reference's own results/completions/{token,gate}/intent.jsonl agrees with
/// all 1,000 scores it recorded (docs/esft-method.md §10; those files are not in the test data).
final class ExactJSONMetricTests: XCTestCase {
    let answer = #"{"intent": "Alarm-Update", "slots": {"datetime_date": "今天", "notes": ["开会", "带伞"]}}"#

    func score(_ prediction: String, _ answer: String? = nil) -> Double {
        ExactJSONMetric.score(rawPrediction: prediction, answer: answer ?? self.answer).score
    }

    func testMatchesAfterTheReferencesCleanUp() {
        XCTAssertEqual(score(answer), 1)
        XCTAssertEqual(score("  \(answer)。\n\n"), 1, "stripped, then '.'/'。' trimmed")
        XCTAssertEqual(score("\(answer)\n下一个问题：..."), 1, "the first non-empty line only")
        XCTAssertEqual(score("好的：```json\n\(answer)\n```"), 1, "the fenced block, then its first non-empty line")
        XCTAssertEqual(score("```json\(answer)```"), 1, "a ```json block")
        XCTAssertEqual(score(#"{"slots": {"notes": ["带伞", "开会"], "datetime_date": "今天"}, "intent": "Alarm-Update"}"#), 1,
                       "key order and list order do not matter")
        XCTAssertEqual(score(#"{"intent": "Alarm-Update", "slots": {"datetime_date": "今 天", "notes": ["开 会", "带伞"]}}"#), 1,
                       "spaces are removed from the prediction's values")
    }

    func testMismatchesScoreZero() {
        XCTAssertEqual(score(#"{"intent": "Alarm-Query", "slots": {"datetime_date": "今天", "notes": ["开会", "带伞"]}}"#), 0)
        XCTAssertEqual(score(#"{"intent": "Alarm-Update", "slots": {"datetime_date": "今天"}}"#), 0, "a slot missing")
        XCTAssertEqual(score(#"{"intent": "Alarm-Update", "slots": {"datetime_date": "今天", "notes": ["开会", "带伞"], "x": "y"}}"#), 0,
                       "an extra slot")
        XCTAssertEqual(score(#"{"intent": "Alarm-Update", "slots": {"datetime_date": "今天", "notes": ["开会"]}}"#), 0, "a list element missing")
        // The answer's values keep their spaces: a prediction can never match them (the reference's asymmetry).
        XCTAssertEqual(score(#"{"intent": "A", "slots": {"k": "a b"}}"#, #"{"intent": "A", "slots": {"k": "a b"}}"#), 0)
    }

    func testUncomparablePredictionsScoreZeroWithANote() {
        for (prediction, why) in [("", "empty: becomes \"None\", not JSON"), ("not json", "invalid"), ("[1, 2]", "an array"),
                                  (#"{"intent": "Alarm-Update", "slots": {"datetime_date": 5}}"#, "a number where the reference calls .replace")] {
            let r = ExactJSONMetric.score(rawPrediction: prediction, answer: answer)
            XCTAssertEqual(r.score, 0, why)
            XCTAssertNotNil(r.note, why)
        }
        // An unclosed ```json block becomes "{}": intent "" and no slots, which matches an empty answer.
        XCTAssertEqual(score("```json {\"intent\": \"x\"", "{}"), 1)
        XCTAssertEqual(ExactJSONMetric.postProcess("```json {\"intent\": \"x\""), "{}")
        XCTAssertEqual(ExactJSONMetric.postProcess(" \u{1c}答案。. "), "答案", "Python whitespace, then '.'/'。'")
    }
}

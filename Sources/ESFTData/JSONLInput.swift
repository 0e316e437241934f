// Reads a chat/text JSONL file into formatted samples, one per non-blank line, with every bad
// line reported as file:line (or skipped and counted, when asked).
import ESFTBase
import Foundation

public struct JSONLInput {
    public struct Record {
        public let line: Int
        public let parts: [SamplePart]
    }

    public let path: String
    public let records: [Record]
    public let bytes: Int
    public let digest: String
    public let lines: Int
    /// Bad lines skipped (only with `skipBad`), and the first few reasons, for the summary.
    public let skipped: Int
    public let skippedReasons: [String]

    public init(path: String, skipBad: Bool, style: ChatStyle = .esft) throws {
        self.path = path
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path)) } catch {
            throw ESFTError("\(path): cannot read (\(ErrorText.reason(error)))")
        }
        let all = [UInt8](data)
        bytes = all.count
        digest = FNV1a64.digest(all)
        var records = [Record](), skipped = 0, reasons = [String](), lineNumber = 0
        for slice in all.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
            lineNumber += 1
            do {
                guard let parts = try Self.parse(slice, style: style) else { continue }
                records.append(Record(line: lineNumber, parts: parts))
            } catch let e as FieldError {
                let message = "\(path):\(lineNumber): \(e.description)"
                guard skipBad else { throw ESFTError(message + " (--skip-bad skips such lines)") }
                skipped += 1
                if reasons.count < 5 { reasons.append(message) }
            }
        }
        lines = all.last == UInt8(ascii: "\n") ? lineNumber - 1 : lineNumber  // a final newline ends a line, it does not start one
        self.records = records; self.skipped = skipped; skippedReasons = reasons
        if records.isEmpty {
            throw ESFTError(skipped > 0 ? "\(path): no usable line left after skipping \(skipped) bad one(s); first: \(reasons[0])"
                                        : "\(path): the file holds no samples (it is empty)")
        }
    }

    /// nil for a blank line.
    static func parse(_ line: ArraySlice<UInt8>, style: ChatStyle) throws -> [SamplePart]? {
        var bytes = line
        if bytes.last == UInt8(ascii: "\r") { bytes = bytes.dropLast() }
        guard let text = String(validating: bytes, as: UTF8.self) else {
            let at = Self.firstInvalidUTF8(bytes)
            throw FieldError("not valid UTF-8 (byte 0x\(String(bytes[bytes.startIndex + at], radix: 16)) at byte \(at + 1) of the line)")
        }
        if text.allSatisfy(\.isWhitespace) { return nil }
        let json: Any
        do { json = try JSONSerialization.jsonObject(with: Data(text.utf8), options: [.fragmentsAllowed]) } catch {
            throw FieldError("malformed JSON (\(Self.reason(error)))")
        }
        return try ChatFormat.parts(of: json, style: style)
    }

    static func reason(_ error: Error) -> String {
        let ns = error as NSError
        return (ns.userInfo[NSDebugDescriptionErrorKey] as? String) ?? ns.localizedDescription
    }

    /// Offset of the first byte where UTF-8 decoding fails.
    static func firstInvalidUTF8(_ bytes: ArraySlice<UInt8>) -> Int {
        var iterator = bytes.makeIterator()
        var decoder = UTF8()
        var offset = 0
        while true {
            switch decoder.decode(&iterator) {
            case let .scalarValue(scalar): offset += UTF8.width(scalar)
            case .emptyInput, .error: return min(offset, bytes.count - 1)
            }
        }
    }
}

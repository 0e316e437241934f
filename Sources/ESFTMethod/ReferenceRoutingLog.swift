import ESFTBase
import Foundation

/// One `expert_weights_<layer>.txt` written by the reference repository (deepseek-ai/ESFT): one line per
/// sample (one forward pass); the line holds every token's top-K expert ids (token-major, tab separated),
/// then an empty field, then the matching gate weights (softmax probabilities, 4 decimals).
public struct ReferenceRoutingLog: Sendable {
    public let layer: Int
    public let path: String
    /// tokens × K expert ids, all lines concatenated.
    public let ids: [Int32]
    /// The gate weight of each id.
    public let weights: [Double]
    /// Tokens on each line (sample).
    public let tokensPerSample: [Int]

    /// Parses a whole file; errors name `path:line` and the field.
    public init(path: String, layer: Int, bytes b: UnsafeRawBufferPointer, topK k: Int, experts e: Int) throws {
        self.path = path; self.layer = layer
        var ids: [Int32] = [], weights: [Double] = [], perSample: [Int] = []
        ids.reserveCapacity(b.count / 6); weights.reserveCapacity(b.count / 6)
        var lineStart = 0, lineNumber = 0
        while lineStart < b.count {
            lineNumber += 1
            var lineEnd = lineStart
            while lineEnd < b.count && b[lineEnd] != UInt8(ascii: "\n") { lineEnd += 1 }
            var end = lineEnd
            if end > lineStart && b[end - 1] == UInt8(ascii: "\r") { end -= 1 }
            let at = "\(path):\(lineNumber)"
            let idsBefore = ids.count
            let weightsOnLine = try Self.parseLine(b, lineStart, end, at: at, experts: e, ids: &ids, weights: &weights)
            let idsOnLine = ids.count - idsBefore
            guard idsOnLine % k == 0 else {
                throw ESFTError("\(at): \(idsOnLine) expert ids is not a multiple of top-k \(k) (ragged line; is --top-k right?)")
            }
            guard weightsOnLine == idsOnLine else {
                throw ESFTError("\(at): \(idsOnLine) expert ids but \(weightsOnLine) gate weights (they must match one to one)")
            }
            for t in 0..<(idsOnLine / k) {
                let token = ids[(idsBefore + t * k)..<(idsBefore + t * k + k)]
                if Set(token).count != k {
                    throw ESFTError("\(at): token \(t + 1) lists an expert twice among its top-\(k): \(token.map(String.init).joined(separator: " "))")
                }
            }
            perSample.append(idsOnLine / k)
            lineStart = lineEnd + 1
        }
        guard !perSample.isEmpty else { throw ESFTError("\(path): empty routing log (no samples)") }
        self.ids = ids; self.weights = weights; tokensPerSample = perSample
    }

    public var tokens: Int { tokensPerSample.reduce(0, +) }

    /// Appends one line's ids and weights; returns the number of weights.
    private static func parseLine(_ b: UnsafeRawBufferPointer, _ start: Int, _ end: Int, at: String, experts e: Int,
                                  ids: inout [Int32], weights: inout [Double]) throws -> Int {
        guard start < end else { throw ESFTError("\(at): empty line (expected expert ids, an empty field, then gate weights)") }
        var pos = start, field = 0, inWeights = false, weightCount = 0
        while true {
            let fieldStart = pos
            while pos < end && b[pos] != UInt8(ascii: "\t") { pos += 1 }
            let fieldEnd = pos
            field += 1
            if fieldStart == fieldEnd {
                if inWeights {
                    // A single trailing tab is harmless; an empty field among the weights is not.
                    guard fieldEnd == end else { throw ESFTError("\(at): field \(field) is empty among the gate weights") }
                } else {
                    guard field > 1 else { throw ESFTError("\(at): no expert ids before the empty field") }
                    inWeights = true
                }
            } else if inWeights {
                weights.append(try parseWeight(b, fieldStart, fieldEnd, at: at, field: field))
                weightCount += 1
            } else {
                ids.append(try parseId(b, fieldStart, fieldEnd, at: at, field: field, experts: e))
            }
            if pos >= end { break }
            pos += 1
        }
        guard inWeights else {
            throw ESFTError("\(at): no empty field (two tabs) separating expert ids from gate weights")
        }
        return weightCount
    }

    private static func text(_ b: UnsafeRawBufferPointer, _ s: Int, _ e: Int) -> String {
        let shown = String(decoding: UnsafeRawBufferPointer(rebasing: b[s..<min(e, s + 24)]), as: UTF8.self)
        return e - s > 24 ? shown + "..." : shown
    }

    private static func parseId(_ b: UnsafeRawBufferPointer, _ s: Int, _ e: Int, at: String, field: Int,
                                experts: Int) throws -> Int32 {
        var v = 0
        for i in s..<e {
            let d = Int(b[i]) - 48
            guard d >= 0 && d <= 9 && e - s <= 9 else {
                throw ESFTError("\(at): field \(field) '\(text(b, s, e))' is not an expert id (a non-negative integer)")
            }
            v = v * 10 + d
        }
        guard v < experts else {
            throw ESFTError("\(at): field \(field): expert id \(v) is outside 0...\(experts - 1) (is --experts \(experts) right?)")
        }
        return Int32(v)
    }

    private static let powersOfTen: [Double] = [1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15]

    /// "0.0414" → 414 / 1e4, exact as strtod for up to 15 digits (both operands exact, one rounding);
    /// anything else (exponents) goes through Double(String).
    private static func parseWeight(_ b: UnsafeRawBufferPointer, _ s: Int, _ e: Int, at: String, field: Int) throws -> Double {
        var mantissa = 0, digits = 0, fraction = -1, simple = true
        for i in s..<e {
            let c = b[i]
            if c == UInt8(ascii: ".") {
                if fraction >= 0 { simple = false; break }
                fraction = 0
            } else if c >= 48 && c <= 57 {
                // Past 15 digits the exact path does not apply (and 19 would overflow Int): strtod's path takes it.
                guard digits < 15 else { simple = false; break }
                mantissa = mantissa * 10 + Int(c - 48); digits += 1
                if fraction >= 0 { fraction += 1 }
            } else { simple = false; break }
        }
        var value: Double
        if simple && digits > 0 && digits <= 15 {
            value = Double(mantissa) / powersOfTen[max(fraction, 0)]
        } else {
            let t = String(decoding: UnsafeRawBufferPointer(rebasing: b[s..<e]), as: UTF8.self)
            guard let v = Double(t), v.isFinite else {
                throw ESFTError("\(at): field \(field) '\(text(b, s, e))' is not a number (gate weights are probabilities)")
            }
            value = v
        }
        guard value >= 0 && value <= 1 else {
            throw ESFTError("\(at): field \(field): gate weight \(value) is outside [0, 1]")
        }
        return value
    }
}

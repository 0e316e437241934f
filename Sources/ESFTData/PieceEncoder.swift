// Drives pre-tokenization and BPE for one normalized segment, depth first, with a memo: what
// the remaining steps make of a piece depends only on its text (every step sees a piece as a
// whole input), so short pieces are looked up instead of re-split. Regex calls cost ~0.3 µs each
// through NSRegularExpression, and text repeats a lot, so this is where the throughput comes from.
import Foundation

final class PieceEncoder: @unchecked Sendable {
    private let preTokenizer: PreTokenizer
    private let model: BPEModel

    private struct Key: Hashable {
        let step: Int
        let units: ArraySlice<UInt16>

        // Hash the bytes in one call, not element by element (that was most of the lookup).
        func hash(into hasher: inout Hasher) {
            hasher.combine(step)
            units.withUnsafeBytes { hasher.combine(bytes: $0) }
        }
    }
    private var memo = [Key: [Int32]]()
    private let lock = NSLock()
    /// Pieces up to this many UTF-16 units are memoized.
    private let maxUnits = 64
    /// Entries kept before the memo is cleared (bounds memory: ~100 MB at worst, ~10 MB typical).
    private let limit = 200_000

    init(preTokenizer: PreTokenizer, model: BPEModel) {
        self.preTokenizer = preTokenizer
        self.model = model
    }

    /// Appends the ids of a normalized segment (no added tokens left in it).
    func encode(_ text: String, into ids: inout [Int32]) {
        let segment = SegmentText(text)
        guard !segment.units.isEmpty else { return }
        encode(segment, step: 0, 0, segment.units.count, into: &ids)
    }

    /// Ids of `units[start..<end]` entering step `step` (steps.count: the ByteLevel step).
    /// `memoize`: false below a piece that is memoized already (one entry per piece, not one per
    /// step it goes through).
    private func encode(_ text: SegmentText, step: Int, _ start: Int, _ end: Int, memoize: Bool = true,
                        into ids: inout [Int32]) {
        guard memoize, end - start <= maxUnits else {
            compute(text, step: step, start, end, memoize: memoize, into: &ids)
            return
        }
        lock.lock()
        let known = memo[Key(step: step, units: text.units[start..<end])]
        lock.unlock()
        if let known {
            ids += known
            return
        }
        var result = [Int32]()
        compute(text, step: step, start, end, memoize: false, into: &result)
        // The key owns a copy: never keep the caller's whole text alive.
        let key = Key(step: step, units: ArraySlice(Array(text.units[start..<end])))
        lock.lock()
        if memo.count >= limit { memo.removeAll(keepingCapacity: true) }
        memo[key] = result
        lock.unlock()
        ids += result
    }

    private func compute(_ text: SegmentText, step: Int, _ start: Int, _ end: Int, memoize: Bool,
                         into ids: inout [Int32]) {
        if step < preTokenizer.steps.count {
            var pieces = [(Int, Int)]()
            preTokenizer.split(step: step, text, start, end, into: &pieces)
            for (s, e) in pieces { encode(text, step: step + 1, s, e, memoize: memoize, into: &ids) }
            return
        }
        var pieces = [BytePiece]()
        preTokenizer.byteLevel(text, start, end, into: &pieces)
        for piece in pieces {
            if piece.prefixSpace {
                model.encode(ArraySlice([0x20] + text.utf8[piece.start..<piece.end]), into: &ids)
            } else {
                model.encode(text.utf8[piece.start..<piece.end], into: &ids)
            }
        }
    }
}

// Byte-level BPE: a piece's bytes start as one symbol each and the adjacent pair with the lowest
// merge rank is merged until no pair has a rank. Ranks live in a dictionary keyed by the pair of
// ids (not strings); merging uses a heap and a linked list, so long pieces cost O(n log n); each
// distinct piece is merged once and then served from a cache.
import Foundation

final class BPEModel: @unchecked Sendable {
    /// Id of each byte's one-character token; -1 when the vocab lacks it.
    let byteIds: [Int32]
    /// (left << 32 | right) -> (rank << 32 | merged id).
    private let merges: PairTable
    /// Whole-piece lookup used when "ignore_merges" is true (Llama 3 style).
    private let wordIds: [ArraySlice<UInt8>: Int32]?
    private let unkId: Int32?
    private let fuseUnk: Bool

    private var cache = [ByteKey: [Int32]]()
    private let lock = NSLock()
    /// Entries kept before the cache is cleared (bounds memory on endless streams of new words).
    private let cacheLimit = 100_000

    /// `vocab` maps token strings to ids; `merges` are (left, right) token strings in rank order.
    init(vocab: [String: Int32], merges: [(String, String)], ignoreMerges: Bool, unkToken: String?,
         fuseUnk: Bool, json: TokenizerJSON) throws {
        var byteIds = [Int32](repeating: -1, count: 256)
        for byte in 0..<256 {
            byteIds[byte] = vocab[ByteLevelAlphabet.string(ofByte: UInt8(byte))] ?? -1
        }
        self.byteIds = byteIds
        var table = PairTable(capacity: merges.count)
        for (rank, (left, right)) in merges.enumerated() {
            guard let a = vocab[left], let b = vocab[right] else {
                throw json.malformed("merge \(rank) (\"\(left)\" \"\(right)\") uses a token that is not in the vocab")
            }
            guard let merged = vocab[left + right] else {
                throw json.malformed("merge \(rank) produces \"\(left + right)\", which is not in the vocab")
            }
            table.insert(Self.key(a, b), UInt64(rank) << 32 | UInt64(UInt32(bitPattern: merged)))
        }
        self.merges = table
        if ignoreMerges {
            var words = [ArraySlice<UInt8>: Int32](minimumCapacity: vocab.count)
            for (token, id) in vocab {
                if let bytes = ByteLevelAlphabet.bytes(ofToken: token) { words[bytes[...]] = id }
            }
            wordIds = words
        } else {
            wordIds = nil
        }
        if let unkToken {
            guard let id = vocab[unkToken] else { throw json.malformed("unk_token \"\(unkToken)\" is not in the vocab") }
            unkId = id
        } else {
            unkId = nil
        }
        self.fuseUnk = fuseUnk
    }

    private static func key(_ a: Int32, _ b: Int32) -> UInt64 {
        UInt64(UInt32(bitPattern: a)) << 32 | UInt64(UInt32(bitPattern: b))
    }

    /// Appends the ids of one piece.
    func encode(_ bytes: ArraySlice<UInt8>, into out: inout [Int32]) {
        if bytes.count == 1 {
            let id = byteIds[Int(bytes.first!)]
            if id >= 0 { out.append(id) } else if let unkId { out.append(unkId) }
            return
        }
        lock.lock()
        let cached = cache[ByteKey(bytes: bytes)]
        lock.unlock()
        if let cached { out.append(contentsOf: cached); return }
        let ids = wordIds?[bytes].map { [$0] } ?? merge(bytes)
        lock.lock()
        if cache.count >= cacheLimit { cache.removeAll(keepingCapacity: true) }
        cache[ByteKey(bytes: ArraySlice(Array(bytes)))] = ids  // own copy: never keep the caller's buffer alive
        lock.unlock()
        out.append(contentsOf: ids)
    }

    /// The merge loop, as the Hugging Face BPE model does it: lowest rank first, leftmost on ties.
    func merge(_ bytes: ArraySlice<UInt8>) -> [Int32] {
        var symbols = [Int32]()
        symbols.reserveCapacity(bytes.count)
        var previousUnknown = false
        for byte in bytes {
            let id = byteIds[Int(byte)]
            if id >= 0 {
                symbols.append(id)
                previousUnknown = false
            } else if let unkId {
                // Unknown bytes become unk (consecutive ones fused into one if fuse_unk).
                if !(fuseUnk && previousUnknown) { symbols.append(unkId) }
                previousUnknown = true
            }
        }
        let n = symbols.count
        if n < 2 { return symbols }
        var next = [Int32](unsafeUninitializedCapacity: n) { buffer, count in
            for i in 0..<n { buffer[i] = Int32(i + 1) }
            buffer[n - 1] = -1
            count = n
        }
        var previous = [Int32](unsafeUninitializedCapacity: n) { buffer, count in
            for i in 0..<n { buffer[i] = Int32(i - 1) }
            count = n
        }
        var alive = [Bool](repeating: true, count: n)
        var heap = MinHeap()
        for i in 0..<(n - 1) {
            if let entry = merges.find(Self.key(symbols[i], symbols[i + 1])) {
                heap.push(entry & 0xFFFF_FFFF_0000_0000 | UInt64(i))
            }
        }
        while let top = heap.pop() {
            let position = Int(top & 0xFFFF_FFFF)
            let rank = top >> 32
            guard alive[position], next[position] >= 0 else { continue }
            let right = Int(next[position])
            // Stale entry: the pair at `position` changed since it was queued.
            guard let entry = merges.find(Self.key(symbols[position], symbols[right])), entry >> 32 == rank else { continue }
            symbols[position] = Int32(truncatingIfNeeded: entry & 0xFFFF_FFFF)
            alive[right] = false
            next[position] = next[right]
            if next[right] >= 0 { previous[Int(next[right])] = Int32(position) }
            let left = Int(previous[position])
            if left >= 0, let pair = merges.find(Self.key(symbols[left], symbols[position])) {
                heap.push(pair & 0xFFFF_FFFF_0000_0000 | UInt64(left))
            }
            let after = Int(next[position])
            if after >= 0, let pair = merges.find(Self.key(symbols[position], symbols[after])) {
                heap.push(pair & 0xFFFF_FFFF_0000_0000 | UInt64(position))
            }
        }
        var result = [Int32]()
        var i: Int32 = 0
        while i >= 0 {
            result.append(symbols[Int(i)])
            i = next[Int(i)]
        }
        return result
    }
}

/// Bytes of a piece as a cache key, hashed in one call rather than byte by byte.
struct ByteKey: Hashable {
    let bytes: ArraySlice<UInt8>

    func hash(into hasher: inout Hasher) {
        bytes.withUnsafeBytes { hasher.combine(bytes: $0) }
    }
}

/// Open-addressing hash table from a pair key to a merge: Swift's Dictionary hashes with
/// SipHash, which was a fifth of the BPE time; keys are ids below 2^31, so UInt64.max marks
/// an empty slot.
struct PairTable {
    private var keys: [UInt64]
    private var values: [UInt64]
    private let shift: UInt64

    init(capacity: Int) {
        var bits: UInt64 = 4
        while (1 << bits) < 2 * max(capacity, 1) { bits += 1 }  // load factor <= 1/2
        keys = [UInt64](repeating: .max, count: 1 << Int(bits))
        values = [UInt64](repeating: 0, count: 1 << Int(bits))
        shift = 64 - bits
    }

    private func slot(_ key: UInt64) -> Int {
        Int(truncatingIfNeeded: (key &* 0x9E37_79B9_7F4A_7C15) >> shift)
    }

    /// Sets the value of `key`; a later merge of the same pair replaces an earlier one, as in HF.
    mutating func insert(_ key: UInt64, _ value: UInt64) {
        var i = slot(key)
        while keys[i] != .max && keys[i] != key { i = (i + 1) & (keys.count - 1) }
        keys[i] = key
        values[i] = value
    }

    func find(_ key: UInt64) -> UInt64? {
        var i = slot(key)
        while true {
            let k = keys[i]
            if k == key { return values[i] }
            if k == .max { return nil }
            i = (i + 1) & (keys.count - 1)
        }
    }
}

/// Binary min-heap of (rank << 32 | position): pops the lowest rank, then the leftmost position.
struct MinHeap {
    private var items = [UInt64]()

    mutating func push(_ value: UInt64) {
        items.append(value)
        var child = items.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            if items[parent] <= items[child] { break }
            items.swapAt(parent, child)
            child = parent
        }
    }

    mutating func pop() -> UInt64? {
        guard let first = items.first else { return nil }
        let last = items.removeLast()
        if items.isEmpty { return first }
        items[0] = last
        var parent = 0
        while true {
            let left = 2 * parent + 1
            if left >= items.count { break }
            let right = left + 1
            let smaller = right < items.count && items[right] < items[left] ? right : left
            if items[parent] <= items[smaller] { break }
            items.swapAt(parent, smaller)
            parent = smaller
        }
        return first
    }
}

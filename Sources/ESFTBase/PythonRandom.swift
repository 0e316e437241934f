/// CPython's `random` module generator (MT19937 with `random.seed(int)`'s init_by_array seeding and
/// `random.random()`'s 53-bit doubles), so a recipe that draws from Python's `random` (the ESFT
/// reference's packing) is reproduced draw for draw from the same seed. Not used for anything else:
/// esft's own randomness is SplitMix64.
public struct PythonRandom {
    private static let n = 624, m = 397
    private var state = [UInt32](repeating: 0, count: 624)
    private var index = 624

    /// `random.seed(seed)` for a non-negative integer seed (CPython keys MT with the 32-bit words of |seed|).
    public init(seed: UInt64) {
        var key = [UInt32(truncatingIfNeeded: seed)]
        if seed >> 32 != 0 { key.append(UInt32(truncatingIfNeeded: seed >> 32)) }
        seedByArray(key)
    }

    private mutating func seedLinear(_ s: UInt32) {
        state[0] = s
        for i in 1..<Self.n { state[i] = 1_812_433_253 &* (state[i - 1] ^ (state[i - 1] >> 30)) &+ UInt32(i) }
        index = Self.n
    }

    private mutating func seedByArray(_ key: [UInt32]) {
        seedLinear(19_650_218)
        var i = 1, j = 0
        for _ in 0..<max(Self.n, key.count) {
            state[i] = (state[i] ^ ((state[i - 1] ^ (state[i - 1] >> 30)) &* 1_664_525)) &+ key[j] &+ UInt32(j)
            i += 1; j += 1
            if i >= Self.n { state[0] = state[Self.n - 1]; i = 1 }
            if j >= key.count { j = 0 }
        }
        for _ in 0..<(Self.n - 1) {
            state[i] = (state[i] ^ ((state[i - 1] ^ (state[i - 1] >> 30)) &* 1_566_083_941)) &- UInt32(i)
            i += 1
            if i >= Self.n { state[0] = state[Self.n - 1]; i = 1 }
        }
        state[0] = 0x8000_0000
    }

    private mutating func twist() {
        for k in 0..<Self.n {
            let y = (state[k] & 0x8000_0000) | (state[(k + 1) % Self.n] & 0x7FFF_FFFF)
            state[k] = state[(k + Self.m) % Self.n] ^ (y >> 1) ^ (y & 1 == 0 ? 0 : 0x9908_B0DF)
        }
        index = 0
    }

    /// The next tempered 32-bit output.
    public mutating func nextUInt32() -> UInt32 {
        if index >= Self.n { twist() }
        var y = state[index]; index += 1
        y ^= y >> 11
        y ^= (y << 7) & 0x9D2C_5680
        y ^= (y << 15) & 0xEFC6_0000
        y ^= y >> 18
        return y
    }

    /// `random.random()`: uniform in [0, 1) from 27 + 26 bits of two outputs.
    public mutating func random() -> Double {
        let a = Double(nextUInt32() >> 5), b = Double(nextUInt32() >> 6)
        return (a * 67_108_864 + b) * (1.0 / 9_007_199_254_740_992.0)
    }

    /// `random.getrandbits(k)` for 1 ≤ k ≤ 32: the top k bits of one output.
    public mutating func bits(_ k: Int) -> UInt32 {
        // Invariant: called with constants and bit lengths of n ≤ UInt32.max (`below`).
        precondition((1...32).contains(k))
        return nextUInt32() >> UInt32(32 - k)
    }

    /// `random._randbelow(n)`: rejection sampling on bit_length(n) bits, so the draws match CPython's.
    public mutating func below(_ n: Int) -> Int {
        // Invariant: n is a count of samples or rows (≥ 1, checked non-empty by the caller; datasets hold < 2^32 rows).
        precondition(n >= 1 && n <= Int(UInt32.max))
        let k = Int.bitWidth - n.leadingZeroBitCount
        while true {
            let r = Int(bits(k))
            if r < n { return r }
        }
    }

    /// `random.shuffle(x)` (Fisher–Yates from the end, as CPython 3.x).
    public mutating func shuffle<T>(_ x: inout [T]) {
        guard x.count > 1 else { return }
        for i in stride(from: x.count - 1, to: 0, by: -1) { x.swapAt(i, below(i + 1)) }
    }
}

/// A read-only matrix operand [rows, cols] (row-major): fp32, or bf16 that is widened to fp32 block by
/// block at the moment of use, so a bf16 model is never materialised in fp32.
public enum Weight {
    case f32(UnsafePointer<Float>)
    case bf16(UnsafePointer<UInt16>)

    public var isBF16: Bool { if case .bf16 = self { return true } else { return false } }

    /// Widens rows [row, row+count) of a matrix with `cols` columns into dst.
    @inline(__always)
    public func widenRows(_ row: Int, _ count: Int, cols: Int, into dst: UnsafeMutablePointer<Float>) {
        switch self {
        case .f32(let p): dst.update(from: p + row * cols, count: count * cols)
        case .bf16(let p): widenBF16(p + row * cols, count: count * cols, into: dst)
        }
    }
}

/// bf16 → fp32 is exact: the bf16 bits are the high half of the fp32 bits.
public func widenBF16(_ src: UnsafePointer<UInt16>, count: Int, into dst: UnsafeMutablePointer<Float>) {
    parallelChunks(count, grain: 1 << 16) { range in
        for i in range { dst[i] = Float(bitPattern: UInt32(src[i]) << 16) }
    }
}

/// The scratch that bf16 weight blocks are widened into, one per worker: compute runs one layer operation
/// at a time (kernels parallelise inside) except where `concurrentWorkers` runs experts side by side, and
/// each such worker widens into its own slot. A slot holds at most `blockFloats`.
enum WidenScratch {
    static let blockFloats = 1 << 20  // 4 MiB: large enough for efficient GEMMs, small enough for cache
    nonisolated(unsafe) static var slots = [Reusable<Float>()]

    /// Slots for `workers` workers (called before they start, so workers only read `slots`).
    static func prepare(workers: Int) {
        while slots.count < workers { slots.append(Reusable<Float>()) }
    }

    static func pointer(_ count: Int, worker: Int) -> UnsafeMutablePointer<Float> {
        slots[worker].reuse(count: count)
    }

    /// Rows per block for a matrix with `cols` columns.
    static func rowsPerBlock(cols: Int) -> Int { max(1, blockFloats / max(cols, 1)) }
}

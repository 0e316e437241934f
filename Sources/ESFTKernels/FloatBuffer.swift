import Foundation

/// Owned, 64-byte aligned fp32 memory (anonymous). Frozen weights never live here: they are views
/// into mapped files. Activations, gradients, optimizer state and scratch do.
public final class FloatBuffer {
    public let count: Int
    public let pointer: UnsafeMutablePointer<Float>

    public init(count: Int, zeroed: Bool = true) {
        precondition(count >= 0, "negative buffer size")
        self.count = count
        var raw: UnsafeMutableRawPointer?
        let bytes = max(count, 1) * MemoryLayout<Float>.stride
        guard posix_memalign(&raw, 64, bytes) == 0, let raw else {
            fatalError("out of memory allocating \(bytes) bytes")
        }
        pointer = raw.bindMemory(to: Float.self, capacity: max(count, 1))
        if zeroed { pointer.initialize(repeating: 0, count: count) }
    }

    deinit { free(pointer) }

    public func zero() { pointer.update(repeating: 0, count: count) }
    public var buffer: UnsafeMutableBufferPointer<Float> { .init(start: pointer, count: count) }
    public func toArray() -> [Float] { Array(buffer) }
}

/// Named scratch buffers that grow to the largest size requested and are then reused, so that
/// steady-state forward/backward passes allocate nothing.
public final class Workspace {
    private var floats: [String: FloatBuffer] = [:]
    private var ints: [String: UnsafeMutableBufferPointer<Int32>] = [:]

    public init() {}

    deinit { for (_, b) in ints { b.deallocate() } }

    /// A buffer of at least `count` floats; contents are unspecified unless `zeroed`.
    public func floats(_ key: String, _ count: Int, zeroed: Bool = false) -> UnsafeMutablePointer<Float> {
        if let b = floats[key], b.count >= count {
            if zeroed { b.pointer.update(repeating: 0, count: count) }
            return b.pointer
        }
        let b = FloatBuffer(count: count, zeroed: true)
        floats[key] = b
        return b.pointer
    }

    public func ints(_ key: String, _ count: Int) -> UnsafeMutablePointer<Int32> {
        if let b = ints[key], b.count >= count { return b.baseAddress! }
        ints[key]?.deallocate()
        let b = UnsafeMutableBufferPointer<Int32>.allocate(capacity: max(count, 1))
        b.initialize(repeating: 0)
        ints[key] = b
        return b.baseAddress!
    }

    /// Bytes currently held (for memory reports).
    public var bytes: Int {
        floats.values.reduce(0) { $0 + $1.count * 4 } + ints.values.reduce(0) { $0 + $1.count * 4 }
    }
}

import Foundation
import Synchronization

/// Allocations of engine buffers (a `FloatBuffer`, or a `Reusable` that had to grow), process-wide: a
/// step loop in steady state makes none, which `SteadyStateAllocationTests` asserts with this counter.
public enum BufferAllocations {
    private static let counter = Atomic<Int>(0)
    public static var count: Int { counter.load(ordering: .relaxed) }
    static func record() { counter.add(1, ordering: .relaxed) }
}

/// Owned, 64-byte aligned fp32 memory (anonymous). Frozen weights never live here: they are views
/// into mapped files. Activations, gradients, optimizer state and scratch do.
public final class FloatBuffer {
    public let count: Int
    public let pointer: UnsafeMutablePointer<Float>

    public init(count: Int, zeroed: Bool = true) {
        // Invariant: sizes are products of checked shapes; commands check memory against the machine first.
        precondition(count >= 0, "negative buffer size")
        self.count = count
        var raw: UnsafeMutableRawPointer?
        let bytes = max(count, 1) * MemoryLayout<Float>.stride
        guard posix_memalign(&raw, 64, bytes) == 0, let raw else {
            // Past the checks of sizes against the machine (every command, esft plan) only an exhausted machine
            // gets here, in the middle of a step, where nothing can be undone: stop, naming the size.
            fatalError("out of memory allocating \(bytes) bytes")
        }
        pointer = raw.bindMemory(to: Float.self, capacity: max(count, 1))
        BufferAllocations.record()
        if zeroed { pointer.initialize(repeating: 0, count: count) }
    }

    deinit { free(pointer) }

    public func zero() { pointer.update(repeating: 0, count: count) }
    public var buffer: UnsafeMutableBufferPointer<Float> { .init(start: pointer, count: count) }
    public func toArray() -> [Float] { Array(buffer) }
}

/// A grow-only buffer: `reuse(count:)` hands out at least `count` elements, reallocating (64-byte
/// aligned, zeroed) only when more than ever before is asked, so steady-state steps allocate nothing.
/// Typed saved state (a layer's activations, scratch) is made of these, one named property each.
public final class Reusable<Element: BitwiseCopyable> {
    public private(set) var capacity = 0
    private var storage: UnsafeMutablePointer<Element>?

    public init() {}

    deinit { free(storage) }

    /// At least `count` elements; contents are what the last user left unless `zeroed`.
    public func reuse(count: Int, zeroed: Bool = false) -> UnsafeMutablePointer<Element> {
        // Invariant: sizes are products of checked shapes; commands check memory against the machine first.
        precondition(count >= 0, "negative buffer size")
        if let storage, capacity >= count {
            if zeroed { UnsafeMutableRawPointer(storage).initializeMemory(as: UInt8.self, repeating: 0, count: count * MemoryLayout<Element>.stride) }
            return storage
        }
        free(storage)
        let bytes = max(count, 1) * MemoryLayout<Element>.stride
        var raw: UnsafeMutableRawPointer?
        // As in FloatBuffer.init: only an exhausted machine, past the size checks, gets here.
        guard posix_memalign(&raw, 64, bytes) == 0, let raw else { fatalError("out of memory allocating \(bytes) bytes") }
        BufferAllocations.record()
        raw.initializeMemory(as: UInt8.self, repeating: 0, count: bytes)
        storage = raw.bindMemory(to: Element.self, capacity: max(count, 1))
        capacity = max(count, 1)
        return storage!
    }
}

/// Something holding `Reusable` buffers, for memory reports.
public protocol HoldsReusable { var heldBytes: Int { get } }

extension Reusable: HoldsReusable {
    public var heldBytes: Int { capacity * MemoryLayout<Element>.stride }
}

/// A typed set of buffers (saved state, scratch): its `heldBytes` adds up every `Reusable` among its
/// stored properties, also inside nested groups, optionals and arrays, so no buffer can be left out.
public protocol ReusableGroup: AnyObject, HoldsReusable {}

public extension ReusableGroup {
    var heldBytes: Int { Mirror(reflecting: self).children.reduce(0) { $0 + reusableBytes(in: $1.value) } }
}

private func reusableBytes(in value: Any) -> Int {
    if let held = value as? HoldsReusable { return held.heldBytes }
    let mirror = Mirror(reflecting: value)
    guard mirror.displayStyle == .optional || mirror.displayStyle == .collection else { return 0 }
    return mirror.children.reduce(0) { $0 + reusableBytes(in: $1.value) }
}

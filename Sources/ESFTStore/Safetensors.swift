import ESFTKernels
import Foundation

/// Element types we read from safetensors files. The FP8 types only come with a block scale
/// (`<name>_scale_inv`, see FP8BlockScale.swift); alone they are never a parameter's value.
public enum TensorDType: String, Sendable {
    case f32 = "F32", bf16 = "BF16", f16 = "F16", f8e4m3 = "F8_E4M3", f8e5m2 = "F8_E5M2"
    public var size: Int {
        switch self {
        case .f32: return 4
        case .bf16, .f16: return 2
        case .f8e4m3, .f8e5m2: return 1
        }
    }
    public var isFP8: Bool { self == .f8e4m3 || self == .f8e5m2 }
}

/// A safetensors file (8-byte little-endian header length, JSON header, raw little-endian data), mapped
/// read-only. The header is validated in full before any tensor is used.
public final class SafetensorsFile {
    public struct Entry {
        public let name: String
        public let dtype: TensorDType
        public let shape: [Int]
        public let begin: Int  // byte offsets relative to the data section
        public let end: Int
        public var count: Int { shape.reduce(1, *) }
    }

    public let path: String
    public let entries: [String: Entry]
    public let metadata: [String: String]
    private let file: MappedFile
    private let dataStart: Int

    public init(path: String) throws {
        file = try MappedFile(path: path)
        self.path = path
        let bytes = file.bytes
        guard bytes.count >= 8 else { throw ESFTError("\(path): truncated safetensors file (\(bytes.count) bytes, no header)") }
        let declared = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: 0, as: UInt64.self))
        guard declared <= UInt64(bytes.count - 8) else {
            throw ESFTError("\(path): truncated safetensors file: header says \(declared) bytes, file has \(bytes.count - 8) after the length")
        }
        let headerLength = Int(declared)
        dataStart = 8 + headerLength
        let headerData = Data(bytes[8..<dataStart])
        guard let header = (try? JSONSerialization.jsonObject(with: headerData)) as? [String: Any] else {
            throw ESFTError("\(path): safetensors header is not a JSON object")
        }
        let dataSize = bytes.count - dataStart
        var entries: [String: Entry] = [:]
        var metadata: [String: String] = [:]
        for (name, value) in header {
            if name == "__metadata__" {
                for (k, v) in (value as? [String: Any]) ?? [:] { metadata[k] = v as? String ?? "\(v)" }
                continue
            }
            guard let e = value as? [String: Any] else { throw ESFTError("\(path): tensor '\(name)': header entry is not an object") }
            guard let dt = e["dtype"] as? String else { throw ESFTError("\(path): tensor '\(name)': missing dtype") }
            guard let dtype = TensorDType(rawValue: dt) else {
                throw ESFTError("\(path): tensor '\(name)': unsupported dtype \(dt) (supported: F32, BF16, F16, and F8_E4M3 / F8_E5M2 with block scales)")
            }
            guard let shapeNums = e["shape"] as? [NSNumber], shapeNums.allSatisfy({ $0.intValue >= 0 }) else {
                throw ESFTError("\(path): tensor '\(name)': shape must be a list of non-negative integers")
            }
            guard let offs = e["data_offsets"] as? [NSNumber], offs.count == 2 else {
                throw ESFTError("\(path): tensor '\(name)': data_offsets must be [begin, end]")
            }
            let shape = shapeNums.map(\.intValue), begin = offs[0].intValue, end = offs[1].intValue
            var elements = 1
            for d in shape {
                let (product, overflow) = elements.multipliedReportingOverflow(by: d)
                guard !overflow, product <= Int(Int32.max) * 64 else { throw ESFTError("\(path): tensor '\(name)': shape \(shape) is too large") }
                elements = product
            }
            guard begin >= 0, begin <= end else { throw ESFTError("\(path): tensor '\(name)': data_offsets [\(begin), \(end)] are not increasing") }
            guard end <= dataSize else {
                throw ESFTError("\(path): tensor '\(name)': data_offsets end \(end) is past the end of the data (\(dataSize) bytes); the file is truncated or corrupt")
            }
            let expected = elements * dtype.size
            guard end - begin == expected else {
                throw ESFTError("\(path): tensor '\(name)': \(end - begin) bytes for shape \(shape) of \(dt) (expected \(expected))")
            }
            entries[name] = Entry(name: name, dtype: dtype, shape: shape, begin: begin, end: end)
        }
        let sorted = entries.values.filter { $0.end > $0.begin }.sorted { $0.begin < $1.begin }
        for (a, b) in zip(sorted, sorted.dropFirst()) where b.begin < a.end {
            throw ESFTError("\(path): tensors '\(a.name)' and '\(b.name)' overlap in the data section")
        }
        self.entries = entries
        self.metadata = metadata
    }

    public func raw(_ e: Entry) -> UnsafeRawPointer { file.base! + dataStart + e.begin }

    /// A zero-copy fp32 view when the tensor is F32 and 4-byte aligned in the mapping, else nil.
    public func f32View(_ e: Entry, elementOffset: Int = 0) -> UnsafeMutablePointer<Float>? {
        guard e.dtype == .f32, e.count > 0 else { return nil }
        let p = raw(e) + elementOffset * 4
        guard Int(bitPattern: p) % MemoryLayout<Float>.alignment == 0 else { return nil }
        return UnsafeMutablePointer(mutating: p.assumingMemoryBound(to: Float.self))
    }

    /// A zero-copy bf16 view when the tensor is BF16 and 2-byte aligned in the mapping, else nil.
    public func bf16View(_ e: Entry, elementOffset: Int = 0) -> UnsafePointer<UInt16>? {
        guard e.dtype == .bf16, e.count > 0 else { return nil }
        let p = raw(e) + elementOffset * 2
        guard Int(bitPattern: p) % 2 == 0 else { return nil }
        return p.assumingMemoryBound(to: UInt16.self)
    }

    /// Converts `count` elements starting at `elementOffset` to fp32 (FP8: the raw codes' values, unscaled).
    public func readFloats(_ e: Entry, elementOffset: Int = 0, count: Int, into dst: UnsafeMutablePointer<Float>) {
        let src = raw(e) + elementOffset * e.dtype.size
        switch e.dtype {
        case .f32:
            UnsafeMutableRawPointer(dst).copyMemory(from: src, byteCount: count * 4)
        case .bf16:
            for i in 0..<count {
                let bits = UInt32(src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) << 16
                dst[i] = Float(bitPattern: bits)
            }
        case .f16:
            for i in 0..<count { dst[i] = Float(Float16(bitPattern: src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))) }
        case .f8e4m3, .f8e5m2:
            let table = FP8.table(e.dtype), codes = src.assumingMemoryBound(to: UInt8.self)
            for i in 0..<count { dst[i] = table[Int(codes[i])] }
        }
    }

    /// Drops the mapped pages of `count` elements from the process's resident set (they stay in the page
    /// cache); used after streaming a tensor out.
    public func release(_ e: Entry, elementOffset: Int, count: Int) {
        file.release(offset: dataStart + e.begin + elementOffset * e.dtype.size, bytes: count * e.dtype.size)
    }

    /// The file's mapping, kept alive by views into it.
    public var mapping: AnyObject { file }
}

/// A tensor to write: fp32 or bf16 values, stored as `dtype` (F32, or BF16 rounded to nearest even).
public struct TensorToWrite {
    public let name: String
    public let shape: [Int]
    public let data: Weight
    public let dtype: TensorDType
    public init(name: String, shape: [Int], data: Weight, dtype: TensorDType = .f32) {
        // Invariant: writers choose F32 or BF16 themselves (export keeps BF16 or widens); F16 and FP8 are read-only.
        precondition(dtype == .f32 || dtype == .bf16, "only F32 and BF16 output is supported")
        self.name = name; self.shape = shape; self.data = data; self.dtype = dtype
    }
    public init(name: String, shape: [Int], data: UnsafePointer<Float>, dtype: TensorDType = .f32) {
        self.init(name: name, shape: shape, data: .f32(data), dtype: dtype)
    }
    public var count: Int { shape.reduce(1, *) }
    public var bytes: Int { count * dtype.size }
}

/// Name, shape and stored dtype of a tensor in a file being written.
public struct TensorHeader {
    public let name: String
    public let shape: [Int]
    public let dtype: TensorDType
    public init(name: String, shape: [Int], dtype: TensorDType) { self.name = name; self.shape = shape; self.dtype = dtype }
    public var bytes: Int { shape.reduce(1, *) * dtype.size }
}

public enum SafetensorsWriter {
    /// Writes atomically (temporary name, then rename). Tensors are laid out in the given order and
    /// converted one at a time, so memory stays near the largest tensor.
    public static func write(_ tensors: [TensorToWrite], metadata: [String: String] = [:], to url: URL) throws {
        try write(tensors.map { TensorHeader(name: $0.name, shape: $0.shape, dtype: $0.dtype) }, metadata: metadata, to: url) { i, emit in
            try emit(tensors[i].data)
        }
    }

    /// The streaming form: `provide(i, emit)` must call `emit` with tensor i's values (e.g. while a
    /// mapping of it is alive); tensors are requested in order.
    public static func write(_ headers: [TensorHeader], metadata: [String: String] = [:], to url: URL,
                             provide: (Int, (Weight) throws -> Void) throws -> Void) throws {
        var header: [String: Any] = [:]
        if !metadata.isEmpty { header["__metadata__"] = metadata }
        var offset = 0
        for t in headers {
            header[t.name] = ["dtype": t.dtype.rawValue, "shape": t.shape, "data_offsets": [offset, offset + t.bytes]] as [String: Any]
            offset += t.bytes
        }
        var json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        while (8 + json.count) % 8 != 0 { json.append(0x20) }  // pad so the data section is 8-byte aligned
        try writeAtomically(to: url) { h in
            var len = UInt64(json.count).littleEndian
            try h.write(contentsOf: Data(bytes: &len, count: 8))
            try h.write(contentsOf: json)
            for (i, t) in headers.enumerated() {
                try provide(i) { data in try h.write(contentsOf: encode(TensorToWrite(name: t.name, shape: t.shape, data: data, dtype: t.dtype))) }
            }
        }
    }

    /// The tensor's bytes in its target dtype.
    static func encode(_ t: TensorToWrite) -> Data {
        let n = t.count
        switch (t.data, t.dtype) {
        case (.f32(let p), .f32): return Data(bytes: p, count: n * 4)
        case (.bf16(let p), .bf16): return Data(bytes: p, count: n * 2)
        case (.f32(let p), _):
            var out = Data(count: n * 2)
            out.withUnsafeMutableBytes { raw in
                let o = raw.bindMemory(to: UInt16.self)
                for i in 0..<n { o[i] = bf16Bits(p[i]).littleEndian }
            }
            return out
        case (.bf16(let p), _):
            var out = Data(count: n * 4)
            out.withUnsafeMutableBytes { raw in widenBF16(p, count: n, into: raw.bindMemory(to: Float.self).baseAddress!) }
            return out
        }
    }

    /// fp32 → bf16 with round-to-nearest-even (NaN stays NaN).
    public static func bf16Bits(_ x: Float) -> UInt16 {
        let b = x.bitPattern
        if x.isNaN { return UInt16(b >> 16) | 0x40 }
        let rounded = b &+ 0x7FFF &+ ((b >> 16) & 1)
        return UInt16(rounded >> 16)
    }
}

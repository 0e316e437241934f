import ESFTHDF5
import ESFTKernels
import ESFTModel
import Foundation

/// An esft model directory opened for compute. Every tensor is mapped read-only on its own pages
/// (`H5Dget_offset` + `mmap`): frozen weights cost page cache, not anonymous memory, and a process
/// that owns a range of experts maps only those.
public final class ModelDirectory {
    public struct TensorInfo {
        public let spec: ParameterSpec
        public var name: String { spec.name }
        public var shape: [Int] { spec.shape }
        public let file: String
        public let offset: Int
        public let bytes: Int
        /// The stored element type (the directory's, or float32 for a tensor the family keeps in float32).
        public let dtype: StoredDType
    }

    public let url: URL
    public let config: ModelConfig
    public let dtype: StoredDType
    public let expertRanges: [Range<Int>]
    public let files: [String]

    public init(url: URL) throws {
        self.url = url
        config = try loadDirectoryConfig(url)
        let mainPath = url.appendingPathComponent(ModelDirectoryLayout.nonExpertFile).path
        let main = try H5File.openReadOnly(mainPath)
        let attrs = main.attributes
        guard attrs.string("esft_format") == ModelDirectoryLayout.format, let version = attrs.int("esft_format_version") else {
            throw ESFTError("\(mainPath): not an esft model file (no esft_format attribute)")
        }
        guard version <= ModelDirectoryLayout.version else {
            throw ESFTError("\(mainPath): model format version \(version) is newer than this esft reads (\(ModelDirectoryLayout.version)); upgrade esft")
        }
        guard let dt = attrs.string("dtype").flatMap(StoredDType.init(rawValue:)) else {
            throw ESFTError("\(mainPath): attribute 'dtype' must be float32 or bfloat16")
        }
        dtype = dt
        let shards = Int(attrs.int("expert_shards") ?? 0)
        guard shards >= 1 || config.nRoutedExperts == 0 else { throw ESFTError("\(mainPath): attribute 'expert_shards' is missing") }
        guard config.nRoutedExperts == 0 || shards <= config.nRoutedExperts else {
            throw ESFTError(ErrorText.field(mainPath, "expert_shards", "attribute is \(shards); a model of \(config.nRoutedExperts) routed experts has 1...\(config.nRoutedExperts) expert shards"))
        }
        expertRanges = ModelDirectoryLayout.split(config.nRoutedExperts, into: max(shards, 1))
        var files = [ModelDirectoryLayout.nonExpertFile]
        for s in 0..<max(shards, 1) where config.nRoutedExperts > 0 {
            let name = ModelDirectoryLayout.expertFile(s, of: shards)
            let path = url.appendingPathComponent(name).path
            let f = try H5File.openReadOnly(path)
            let range = expertRanges[s]
            guard f.attributes.int("expert_begin") == Int64(range.lowerBound), f.attributes.int("expert_end") == Int64(range.upperBound) else {
                throw ESFTError("\(path): holds experts \(f.attributes.int("expert_begin") ?? -1)..<\(f.attributes.int("expert_end") ?? -1), expected \(range)")
            }
            files.append(name)
        }
        self.files = files
    }

    /// The file holding a tensor.
    public func file(for id: ParameterID) -> String {
        guard let e = id.routedExpert?.expert else { return ModelDirectoryLayout.nonExpertFile }
        return ModelDirectoryLayout.expertFile(expertRanges.firstIndex { $0.contains(e) }!, of: expertRanges.count)
    }

    /// Checks and locates every tensor of the config in `names` (default: all), without mapping anything.
    public func tensorInfos(_ specs: [ParameterSpec]? = nil) throws -> [TensorInfo] {
        var open: [String: H5File] = [:]
        return try (specs ?? config.parameterSpecs()).map { spec in
            let fileName = file(for: spec.id)
            let path = url.appendingPathComponent(fileName).path
            let f = try open[fileName] ?? H5File.openReadOnly(path)
            open[fileName] = f
            let d = try f.dataset(spec.name)
            guard d.shape == spec.shape else {
                throw ESFTError("\(path): tensor '\(spec.name)' has shape \(d.shape), but config.json implies \(spec.shape)")
            }
            let kind = d.elementKind
            // A tensor the family keeps in float32 may be either (directories written before it was kept).
            let stored: StoredDType = kind.isFloat && kind.size == 4 && config.family.keepsFloat32(spec.id) ? .fp32 : dtype
            let want = stored == .fp32 ? (true, 4) : (false, 2)
            guard kind.isFloat == want.0, kind.size == want.1, kind.littleEndian else {
                throw ESFTError("\(path): tensor '\(spec.name)' is not stored as little-endian \(dtype.rawValue) like the rest of the model")
            }
            if let reason = d.unmappableReason {
                throw ESFTError("\(path): tensor '\(spec.name)' cannot be memory-mapped: \(reason). Rewrite the model with `esft import` or `esft export --format hdf5`")
            }
            guard d.offset! % want.1 == 0 else {
                throw ESFTError("\(path): tensor '\(spec.name)' starts at byte \(d.offset!), not a multiple of its element size; rewrite the model with `esft export --format hdf5`")
            }
            return TensorInfo(spec: spec, file: fileName, offset: d.offset!,
                              bytes: spec.shape.reduce(1, *) * want.1, dtype: stored)
        }
    }

    /// Maps one tensor for the duration of `body` (export streams a model through this, one tensor at a time).
    public func withTensor<R>(_ info: TensorInfo, _ body: (Weight) throws -> R) throws -> R {
        let path = url.appendingPathComponent(info.file).path
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw ESFTError("\(path): cannot open (\(String(cString: strerror(errno))))") }
        defer { close(fd) }
        let m = try TensorMapping(fd: fd, path: path, offset: info.offset, bytes: info.bytes, name: info.name)
        return try withExtendedLifetime(m) {
            try body(info.dtype == .fp32 ? .f32(m.pointer.assumingMemoryBound(to: Float.self)) : .bf16(m.pointer.assumingMemoryBound(to: UInt16.self)))
        }
    }

    /// Parameters as read-only mapped views. With `experts`, only routed experts in that range are
    /// included (and mapped); the rest of the experts are absent from the set.
    public func loadParameters(experts: Range<Int>? = nil) throws -> ParameterSet {
        try loadParameters(keepingExpert: experts.map { r in { _, e in r.contains(e) } })
    }

    /// The same, keeping the routed experts `keep(layer, expert)` accepts (an expert placement's share).
    public func loadParameters(keepingExpert keep: ((Int, Int) -> Bool)?) throws -> ParameterSet {
        let specs = config.parameterSpecs().filter { spec in
            guard let keep, let x = spec.id.routedExpert else { return true }
            return keep(x.layer, x.expert)
        }
        let infos = try tensorInfos(specs)
        var fds: [String: Int32] = [:]
        defer { for fd in fds.values { close(fd) } }
        let set = ParameterSet(family: config.family)
        for info in infos {
            let path = url.appendingPathComponent(info.file).path
            let fd = try fds[info.file] ?? {
                let fd = open(path, O_RDONLY)
                guard fd >= 0 else { throw ESFTError("\(path): cannot open (\(String(cString: strerror(errno))))") }
                return fd
            }()
            fds[info.file] = fd
            let mapping = try TensorMapping(fd: fd, path: path, offset: info.offset, bytes: info.bytes, name: info.name)
            if info.dtype == .bf16 && info.shape.count == 1 {
                // 1-D (norms): widened into owned fp32; a negligible share of the model.
                let p = Parameter(info.spec)
                widenBF16(mapping.pointer.assumingMemoryBound(to: UInt16.self), count: p.count, into: p.value)
                set.add(p)
            } else if info.dtype == .bf16 {
                set.add(Parameter(info.spec, weight: .bf16(mapping.pointer.assumingMemoryBound(to: UInt16.self)), owner: mapping))
            } else {
                set.add(Parameter(info.spec, weight: .f32(mapping.pointer.assumingMemoryBound(to: Float.self)), owner: mapping))
            }
        }
        return set
    }
}

/// One tensor's bytes mapped read-only (the enclosing pages only).
final class TensorMapping {
    let base: UnsafeMutableRawPointer
    let length: Int
    let pointer: UnsafeRawPointer

    init(fd: Int32, path: String, offset: Int, bytes: Int, name: String) throws {
        var st = stat()
        guard fstat(fd, &st) == 0, Int(st.st_size) >= offset + bytes else {
            throw ESFTError("\(path): tensor '\(name)' lies past the end of the file (truncated?)")
        }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = offset / page * page
        length = offset + max(bytes, 1) - start
        guard let p = mmap(nil, length, PROT_READ, MAP_SHARED, fd, off_t(start)), p != MAP_FAILED else {
            throw ESFTError("\(path): cannot map tensor '\(name)' (\(String(cString: strerror(errno))))")
        }
        base = p
        pointer = UnsafeRawPointer(p + (offset - start))
    }

    deinit { munmap(base, length) }
}

import CHDF5
import CHDF5Shims
import ESFTBase
import Foundation

/// Element types stored in our HDF5 files. bf16 is stored as little-endian uint16 holding the bf16 bit
/// pattern (every HDF5 reader, h5py included, reads it; see docs/formats.md for the numpy conversion).
public enum H5Element: Sendable {
    case float32, bfloat16, int32, int64, uint8

    var fileType: hid_t {
        switch self {
        case .float32: return esft_h5t_ieee_f32le()
        case .bfloat16: return esft_h5t_std_u16le()
        case .int32: return esft_h5t_native_int32()
        case .int64: return esft_h5t_std_i64le()
        case .uint8: return esft_h5t_native_uint8()
        }
    }
    var memoryType: hid_t {
        switch self {
        case .float32: return esft_h5t_native_float()
        case .bfloat16: return esft_h5t_native_uint16()
        case .int32: return esft_h5t_native_int32()
        case .int64: return esft_h5t_native_int64()
        case .uint8: return esft_h5t_native_uint8()
        }
    }
    public var size: Int {
        switch self { case .float32, .int32: return 4; case .bfloat16: return 2; case .int64: return 8; case .uint8: return 1 }
    }
}

/// Turns HDF5's own error stack printing off once: failures become ESFTErrors naming file and dataset, with
/// the stack's causes in the message (HDF5ErrorStack).
private let silenceHDF5: Void = { H5Eset_auto2(0, nil, nil); _ = H5open() }()

/// An HDF5 file. Datasets we create are contiguous, unfiltered and allocated at creation, so that their
/// bytes sit at a fixed offset in the file (`H5Dget_offset`) and can be memory-mapped.
public final class H5File {
    public let path: String
    let id: hid_t
    private var closed = false

    private init(path: String, id: hid_t) { self.path = path; self.id = id }

    /// Creates (truncating) a file whose objects are aligned to `alignment` bytes (page size by default, so
    /// each tensor can be mapped on its own pages).
    public static func create(_ path: String, alignment: Int = 4096) throws -> H5File {
        _ = silenceHDF5
        let fapl = H5Pcreate(esft_h5p_file_access())
        defer { H5Pclose(fapl) }
        H5Pset_alignment(fapl, 1, hsize_t(alignment))
        let id = H5Fcreate(path, esft_h5f_acc_trunc(), 0, fapl)
        guard id >= 0 else { throw ESFTError("\(path): cannot create HDF5 file\(HDF5ErrorStack.detail)") }
        return H5File(path: path, id: id)
    }

    public static func openReadOnly(_ path: String) throws -> H5File { try open(path, flags: esft_h5f_acc_rdonly()) }

    /// Opens an existing file for changes (attributes, or writing rows into existing datasets).
    public static func openReadWrite(_ path: String) throws -> H5File { try open(path, flags: esft_h5f_acc_rdwr()) }

    private static func open(_ path: String, flags: UInt32) throws -> H5File {
        _ = silenceHDF5
        guard FileManager.default.fileExists(atPath: path) else { throw ESFTError("\(path): no such file") }
        guard H5Fis_hdf5(path) > 0 else { throw ESFTError("\(path): not an HDF5 file (or truncated)") }
        let id = H5Fopen(path, flags, 0)
        guard id >= 0 else { throw ESFTError("\(path): cannot open HDF5 file (corrupt or truncated?)\(HDF5ErrorStack.detail)") }
        return H5File(path: path, id: id)
    }

    public func close() throws {
        guard !closed else { return }
        closed = true
        guard H5Fclose(id) >= 0 else { throw ESFTError("\(path): error closing HDF5 file\(HDF5ErrorStack.detail)") }
    }

    deinit { if !closed { H5Fclose(id) } }

    /// A new contiguous dataset, allocated now and never filled (we write every byte).
    public func createDataset(_ name: String, element: H5Element, shape: [Int]) throws -> H5Dataset {
        var dims = shape.map { hsize_t($0) }
        let space = H5Screate_simple(Int32(dims.count), &dims, nil)
        defer { H5Sclose(space) }
        let dcpl = H5Pcreate(esft_h5p_dataset_create())
        defer { H5Pclose(dcpl) }
        H5Pset_layout(dcpl, H5D_CONTIGUOUS)
        H5Pset_alloc_time(dcpl, H5D_ALLOC_TIME_EARLY)
        H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER)
        let d = H5Dcreate2(id, name, element.fileType, space, 0, dcpl, 0)
        guard d >= 0 else { throw ESFTError("\(path): cannot create dataset '\(name)'\(HDF5ErrorStack.detail)") }
        return H5Dataset(file: self, name: name, id: d)
    }

    public func dataset(_ name: String) throws -> H5Dataset {
        guard H5Lexists(id, name, 0) > 0 else { throw ESFTError("\(path): no dataset '\(name)'") }
        let d = H5Dopen2(id, name, 0)
        guard d >= 0 else { throw ESFTError("\(path): cannot open dataset '\(name)'\(HDF5ErrorStack.detail)") }
        return H5Dataset(file: self, name: name, id: d)
    }

    /// A new group (a folder of datasets, e.g. "exp_avg"); datasets in it are created as "group/name".
    public func createGroup(_ name: String) throws {
        let g = H5Gcreate2(id, name, 0, 0, 0)
        guard g >= 0 else { throw ESFTError("\(path): cannot create group '\(name)'\(HDF5ErrorStack.detail)") }
        H5Gclose(g)
    }

    /// Whether a group or dataset of that path exists.
    public func exists(_ name: String) -> Bool { H5Lexists(id, name, 0) > 0 }

    /// Names of the datasets in a group (the root by default), in name order.
    public func datasetNames(in group: String = ".") throws -> [String] {
        var info = H5G_info_t()
        guard H5Gget_info_by_name(id, group, &info, 0) >= 0 else { throw ESFTError("\(path): cannot list datasets of '\(group)'\(HDF5ErrorStack.detail)") }
        var names: [String] = []
        for i in 0..<info.nlinks {
            let len = H5Lget_name_by_idx(id, group, H5_INDEX_NAME, H5_ITER_INC, i, nil, 0, 0)
            guard len >= 0 else { throw ESFTError("\(path): cannot read link \(i) of '\(group)'") }
            var buf = [CChar](repeating: 0, count: Int(len) + 1)
            H5Lget_name_by_idx(id, group, H5_INDEX_NAME, H5_ITER_INC, i, &buf, Int(len) + 1, 0)
            let name = String(cString: buf)
            var oinfo = H5O_info_t()
            let full = group == "." ? name : "\(group)/\(name)"
            if H5Oget_info_by_name2(id, full, &oinfo, UInt32(H5O_INFO_BASIC), 0) >= 0, oinfo.type == H5O_TYPE_DATASET {
                names.append(name)
            }
        }
        return names
    }

    public var attributes: H5Attributes { H5Attributes(object: id, owner: path) }
}

/// One dataset.
public final class H5Dataset {
    public let file: H5File
    public let name: String
    let id: hid_t

    init(file: H5File, name: String, id: hid_t) { self.file = file; self.name = name; self.id = id }
    deinit { H5Dclose(id) }

    private var where_: String { "\(file.path): dataset '\(name)'" }

    public var shape: [Int] {
        let space = H5Dget_space(id)
        defer { H5Sclose(space) }
        let rank = Int(H5Sget_simple_extent_ndims(space))
        var dims = [hsize_t](repeating: 0, count: max(rank, 1))
        H5Sget_simple_extent_dims(space, &dims, nil)
        return dims.prefix(rank).map { Int($0) }
    }

    /// (is a float type, is a signed integer type, element size in bytes, little-endian).
    public var elementKind: (isFloat: Bool, isSigned: Bool, size: Int, littleEndian: Bool) {
        let t = H5Dget_type(id)
        defer { H5Tclose(t) }
        let cls = H5Tget_class(t)
        return (cls == H5T_FLOAT, cls == H5T_INTEGER && H5Tget_sign(t) == H5T_SGN_2,
                Int(H5Tget_size(t)), H5Tget_order(t) == H5T_ORDER_LE)
    }

    /// Why this dataset cannot be memory-mapped, or nil when it can (contiguous, unfiltered, allocated).
    public var unmappableReason: String? {
        let dcpl = H5Dget_create_plist(id)
        defer { H5Pclose(dcpl) }
        let filtered = H5Pget_nfilters(dcpl) > 0
        if H5Pget_layout(dcpl) != H5D_CONTIGUOUS {
            return filtered ? "it is compressed (stored in chunks), not contiguous" : "it is stored in chunks, not contiguous"
        }
        if filtered { return "it is compressed or filtered" }
        if offset == nil { return "its storage is not allocated" }
        return nil
    }

    /// Why the dataset's declared size cannot be its data, or nil when it can: a file may declare any shape in a
    /// few header bytes, so sizes are checked against what is stored before anything is allocated for them.
    /// Contiguous data must be stored whole; compressed chunks hold at most 1032 times their bytes (deflate's
    /// largest ratio); uncompressed chunks at most their bytes plus 1 MiB of unwritten fill.
    public var declaredSizeProblem: String? {
        var elements = 1
        for d in shape {
            let (p, overflow) = elements.multipliedReportingOverflow(by: d)
            guard !overflow else { return "declares shape \(shape), more elements than an Int holds" }
            elements = p
        }
        let (declared, overflow) = elements.multipliedReportingOverflow(by: max(elementKind.size, 1))
        guard !overflow else { return "declares shape \(shape) of \(elementKind.size)-byte values, more bytes than an Int holds" }
        guard declared > 0 else { return nil }
        // What the header says is stored, but never more than the file holds (a corrupt layout can claim anything).
        var fileSize: hsize_t = 0
        let inFile = H5Fget_filesize(file.id, &fileSize) >= 0 ? Int(clamping: fileSize) : Int.max
        let stored = min(Int(clamping: H5Dget_storage_size(id)), inFile)
        let dcpl = H5Dget_create_plist(id)
        defer { H5Pclose(dcpl) }
        let contiguous = H5Pget_layout(dcpl) == H5D_CONTIGUOUS, filtered = H5Pget_nfilters(dcpl) > 0
        let limit = contiguous ? stored : filtered ? stored.multipliedReportingOverflow(by: 1032).partialValue : stored + (1 << 20)
        guard declared <= limit else {
            return "declares shape \(shape) (\(declared) bytes) but stores \(stored) bytes\(filtered ? " compressed" : ""): the file is truncated or lies about its size"
        }
        return nil
    }

    /// Byte offset of the data in the file (nil if not allocated or not contiguous, or if a corrupt file gives an
    /// address past what an Int holds).
    public var offset: Int? {
        let o = H5Dget_offset(id)
        return o == haddr_t.max ? nil : Int(exactly: o)
    }

    public func write(_ data: UnsafeRawPointer, element: H5Element) throws {
        guard H5Dwrite(id, element.memoryType, 0, 0, 0, data) >= 0 else { throw ESFTError("\(where_): write failed (disk full?)\(HDF5ErrorStack.detail)") }
    }

    /// Writes rows [row, row+count) of a dataset whose first dimension is rows.
    public func writeRows(_ row: Int, _ count: Int, _ data: UnsafeRawPointer, element: H5Element) throws {
        guard withRows(row, count, { H5Dwrite(id, element.memoryType, $0, $1, 0, data) }) >= 0 else {
            throw ESFTError("\(where_): write of rows \(row)..<\(row + count) failed (disk full?)\(HDF5ErrorStack.detail)")
        }
    }

    /// Reads rows [row, row+count) of a dataset whose first dimension is rows (a hyperslab: only those
    /// rows' bytes are read from the file).
    public func readRows(_ row: Int, _ count: Int, into data: UnsafeMutableRawPointer, element: H5Element) throws {
        guard withRows(row, count, { H5Dread(id, element.memoryType, $0, $1, 0, data) }) >= 0 else {
            throw ESFTError("\(where_): read of rows \(row)..<\(row + count) failed\(HDF5ErrorStack.detail)")
        }
    }

    /// Runs `io(memorySpace, fileSpace)` with rows [row, row+count) selected in the file.
    private func withRows(_ row: Int, _ count: Int, _ io: (hid_t, hid_t) -> herr_t) -> herr_t {
        let dims = shape
        var start = [hsize_t](repeating: 0, count: dims.count), counts = dims.map { hsize_t($0) }
        start[0] = hsize_t(row); counts[0] = hsize_t(count)
        let fileSpace = H5Dget_space(id)
        defer { H5Sclose(fileSpace) }
        H5Sselect_hyperslab(fileSpace, H5S_SELECT_SET, &start, nil, &counts, nil)
        let memSpace = H5Screate_simple(Int32(counts.count), &counts, nil)
        defer { H5Sclose(memSpace) }
        return io(memSpace, fileSpace)
    }

    public func read(into data: UnsafeMutableRawPointer, element: H5Element) throws {
        guard H5Dread(id, element.memoryType, 0, 0, 0, data) >= 0 else { throw ESFTError("\(where_): read failed\(HDF5ErrorStack.detail)") }
    }

    public var attributes: H5Attributes { H5Attributes(object: id, owner: where_) }
}

/// Scalar attributes of a file's root group or of a dataset.
public struct H5Attributes {
    let object: hid_t
    let owner: String

    public func set(_ name: String, _ value: String) throws {
        let t = H5Tcopy(esft_h5t_c_s1())
        defer { H5Tclose(t) }
        H5Tset_size(t, max(value.utf8.count, 1))
        try write(name, type: t, value.utf8.count == 0 ? [0] : Array(value.utf8))
    }

    public func set(_ name: String, _ value: Int64) throws {
        try write(name, type: esft_h5t_std_i64le(), withUnsafeBytes(of: value.littleEndian) { Array($0) })
    }

    public func set(_ name: String, _ value: Double) throws {
        try write(name, type: esft_h5t_native_double(), withUnsafeBytes(of: value) { Array($0) })
    }

    private func write(_ name: String, type: hid_t, _ bytes: [UInt8]) throws {
        if H5Aexists(object, name) > 0 { H5Adelete(object, name) }
        let space = H5Screate(H5S_SCALAR)
        defer { H5Sclose(space) }
        let a = H5Acreate2(object, name, type, space, 0, 0)
        guard a >= 0 else { throw ESFTError("\(owner): cannot create attribute '\(name)'\(HDF5ErrorStack.detail)") }
        defer { H5Aclose(a) }
        let memType = type == esft_h5t_std_i64le() ? esft_h5t_native_int64() : type
        guard bytes.withUnsafeBytes({ H5Awrite(a, memType, $0.baseAddress!) }) >= 0 else {
            throw ESFTError("\(owner): cannot write attribute '\(name)'\(HDF5ErrorStack.detail)")
        }
    }

    public func string(_ name: String) -> String? {
        guard H5Aexists(object, name) > 0 else { return nil }
        let a = H5Aopen(object, name, 0)
        defer { H5Aclose(a) }
        let t = H5Aget_type(a)
        defer { H5Tclose(t) }
        guard H5Tget_class(t) == H5T_STRING, H5Tis_variable_str(t) == 0 else { return nil }
        let size = H5Tget_size(t)
        var buf = [UInt8](repeating: 0, count: size + 1)
        guard H5Aread(a, t, &buf) >= 0 else { return nil }
        return String(decoding: buf.prefix { $0 != 0 }, as: UTF8.self)
    }

    public func int(_ name: String) -> Int64? {
        guard H5Aexists(object, name) > 0 else { return nil }
        let a = H5Aopen(object, name, 0)
        defer { H5Aclose(a) }
        let t = H5Aget_type(a)
        defer { H5Tclose(t) }
        guard H5Tget_class(t) == H5T_INTEGER else { return nil }
        var v: Int64 = 0
        guard H5Aread(a, esft_h5t_native_int64(), &v) >= 0 else { return nil }
        return v
    }

    public func double(_ name: String) -> Double? {
        guard H5Aexists(object, name) > 0 else { return nil }
        let a = H5Aopen(object, name, 0)
        defer { H5Aclose(a) }
        var v: Double = 0
        guard H5Aread(a, esft_h5t_native_double(), &v) >= 0 else { return nil }
        return v
    }
}

import ESFTKernels
import Foundation

/// A whole file mapped read-only. Frozen weights are views into it: the page cache holds them, not the
/// process's anonymous memory, and writing through such a view faults instead of corrupting the file.
public final class MappedFile {
    public let path: String
    public let size: Int
    public let base: UnsafeRawPointer?

    public init(path: String) throws {
        self.path = path
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw ESFTError("\(path): cannot open (\(String(cString: strerror(errno))))") }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw ESFTError("\(path): cannot stat (\(String(cString: strerror(errno))))") }
        size = Int(st.st_size)
        if size == 0 { base = nil; return }
        guard let p = mmap(nil, size, PROT_READ, MAP_SHARED, fd, 0), p != MAP_FAILED else {
            throw ESFTError("\(path): cannot map (\(String(cString: strerror(errno))))")
        }
        base = UnsafeRawPointer(p)
    }

    deinit { if let base { munmap(UnsafeMutableRawPointer(mutating: base), size) } }

    public var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: size) }

    /// Tells the kernel this process no longer needs these pages (MADV_DONTNEED): they leave the
    /// resident set and are read again from the page cache if touched.
    public func release(offset: Int, bytes: Int) {
        guard let base, bytes > 0 else { return }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = offset / page * page, end = min(size, (offset + bytes + page - 1) / page * page)
        madvise(UnsafeMutableRawPointer(mutating: base + start), end - start, MADV_DONTNEED)
    }
}

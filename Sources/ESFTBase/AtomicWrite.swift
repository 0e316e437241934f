import Foundation

/// Every output is built under a temporary sibling name and renamed into place when complete: rename(2)
/// within one directory is atomic, so readers see the old state or the whole new file, never a part,
/// and a failure leaves nothing half-written behind.
public enum AtomicWrite {
    /// `.NAME.tmp-PID` in the same directory (same file system, so the rename cannot copy). Hidden, and
    /// per process, so two writers of one output do not share a temporary.
    public static func temporarySibling(of url: URL) -> URL {
        url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).tmp-\(getpid())")
    }

    /// Renames a finished temporary file or directory to `url`; on failure removes the temporary.
    public static func renameIntoPlace(_ temporary: URL, as url: URL) throws {
        guard rename(temporary.path, url.path) == 0 else {
            let reason = String(cString: strerror(errno))
            try? FileManager.default.removeItem(at: temporary)
            throw ESFTError("\(url.path): cannot rename the temporary \(temporary.lastPathComponent) into place (\(reason))")
        }
    }

    /// `body` creates a file or directory at the temporary path it is given; when it returns, that is
    /// renamed to `url`. If `body` throws, the temporary is removed and the error passed on.
    public static func create(_ url: URL, _ body: (URL) throws -> Void) throws {
        let temporary = temporarySibling(of: url)
        try? FileManager.default.removeItem(at: temporary)   // a dead process's leftover with our pid
        do { try body(temporary) } catch {
            try? FileManager.default.removeItem(at: temporary)
            throw error
        }
        try renameIntoPlace(temporary, as: url)
    }

    /// fsync(2) of a file or directory by path: a file written by a library (HDF5) reaches the disk before it
    /// is renamed, and a directory's new entries (a rename) survive a crash once the directory is synced.
    public static func sync(_ url: URL) throws {
        let fd = open(url.path, O_RDONLY)
        guard fd >= 0 else { throw ESFTError("\(url.path): cannot open to sync (\(String(cString: strerror(errno))))") }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw ESFTError("\(url.path): fsync failed (\(String(cString: strerror(errno))))") }
    }

    /// Writes a file through a handle, synced to disk before the rename.
    public static func write(to url: URL, _ body: (FileHandle) throws -> Void) throws {
        try create(url) { temporary in
            // open(2) rather than FileManager.createFile: its errno says why (read-only, a parent that is a file, ...).
            let fd = open(temporary.path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
            guard fd >= 0 else {
                let reason = errno == ENOENT ? "the directory \(url.deletingLastPathComponent().path) does not exist" : ErrorText.posix(errno)
                throw ESFTError("\(url.path): cannot create (\(reason))")
            }
            close(fd)
            do {
                let handle = try FileHandle(forWritingTo: temporary)
                defer { try? handle.close() }
                try body(handle)
                try handle.synchronize()
            } catch let error as ESFTError {
                throw error
            } catch {
                throw ESFTError("\(url.path): cannot write (\(ErrorText.reason(error))); nothing was left behind")
            }
        }
    }

    /// Writes a whole file.
    public static func write(_ data: Data, to url: URL) throws {
        try write(to: url) { try $0.write(contentsOf: data) }
    }

    /// Writes several files; if a later one fails, the earlier ones are removed again, so a command
    /// leaves all its outputs or none.
    public static func writeFiles(_ files: [(URL, Data)]) throws {
        var written: [URL] = []
        do {
            for (url, data) in files {
                try write(data, to: url)
                written.append(url)
            }
        } catch {
            for url in written { try? FileManager.default.removeItem(at: url) }
            throw error
        }
    }
}

/// The short spelling of `AtomicWrite.write(to:_:)`, which safetensors and training outputs use.
public func writeAtomically(to url: URL, _ body: (FileHandle) throws -> Void) throws {
    try AtomicWrite.write(to: url, body)
}

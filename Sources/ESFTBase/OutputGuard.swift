import Foundation

/// Checks a command's outputs against its inputs before any work starts: an output must never be an
/// input (the rename that completes it would replace the input), nor a directory an input lies in (it would
/// be replaced or filled around the input), nor the same directory as an input directory.
/// Paths are compared after resolving `..`, symlinks and hard links, so a second spelling is caught too.
public enum OutputGuard {
    /// One named path: the option (or positional name) and the path as given.
    public struct Item {
        public let name: String
        public let path: String
        /// Whether the output replaces what is at its path (a file or directory renamed into place), so an input
        /// inside it would go; false for a directory filled in place (esft train's --out), checked by path only.
        public let replaced: Bool
        public init(_ name: String, _ path: String, replaced: Bool = true) { self.name = name; self.path = path; self.replaced = replaced }
    }

    /// Throws an ESFTError naming the output, its option and the input it would destroy. Absent optional
    /// paths are simply left out of the lists.
    public static func check(outputs: [Item], inputs: [Item]) throws {
        for (i, out) in outputs.enumerated() {
            let o = canonical(out.path)
            for input in inputs {
                let p = canonical(input.path)
                if o == p || sameInode(out.path, input.path) {
                    throw ESFTError(ErrorText.field(out.path, out.name, "is the same file as the input \(input.name) (\(input.path)); "
                                                    + "writing it would destroy the input: choose another \(out.name)"))
                }
                if out.replaced, p.hasPrefix(o + "/") {
                    throw ESFTError(ErrorText.field(out.path, out.name, "contains the input \(input.name) (\(input.path)); "
                                                    + "the output must not be a directory an input lies in"))
                }
            }
            for other in outputs[(i + 1)...] where canonical(other.path) == o {
                throw ESFTError(ErrorText.field(out.path, out.name, "is also given as \(other.name); give each output its own path"))
            }
        }
    }

    /// The absolute path with `.`/`..` and symlinks resolved; for a path that does not exist yet, its
    /// nearest existing ancestor is resolved and the rest appended.
    public static func canonical(_ path: String) -> String {
        var url = URL(fileURLWithPath: path).standardizedFileURL
        var rest: [String] = []
        while !FileManager.default.fileExists(atPath: url.path), url.path != "/" {
            rest.insert(url.lastPathComponent, at: 0)
            url.deleteLastPathComponent()
        }
        var base = url.path
        if let resolved = realpath(url.path, nil) { base = String(cString: resolved); free(resolved) }
        for part in rest { base = base == "/" ? "/" + part : base + "/" + part }
        return base
    }

    /// Whether two existing paths are one file (hard links, bind mounts).
    static func sameInode(_ a: String, _ b: String) -> Bool {
        var sa = stat(), sb = stat()
        guard stat(a, &sa) == 0, stat(b, &sb) == 0 else { return false }
        return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino
    }
}

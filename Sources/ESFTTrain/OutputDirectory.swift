import ESFTBase
import Foundation

/// The `--out` of a training run: checked before anything starts, then prepared and locked by rank 0 once
/// every input is valid (OutputLock: one job per directory).
public enum OutputDirectory {
    /// The files a run writes in --out (besides checkpoints/).
    public static let runFiles = ["trained.safetensors", "summary.json", "metrics.jsonl", "run.json", "expert_config.json"]

    /// What --out must be, checked without creating anything: a new path, or an empty directory (any
    /// directory when resuming) that this process could write into.
    public static func check(_ out: URL, resuming: Bool) throws {
        let fm = FileManager.default
        var isDirectory: ObjCBool = false
        if fm.fileExists(atPath: out.path, isDirectory: &isDirectory) {
            guard isDirectory.boolValue else { throw ESFTError("\(out.path): --out is an existing file, not a directory") }
            if !resuming, !((try? fm.contentsOfDirectory(atPath: out.path)) ?? []).isEmpty {
                throw ESFTError("\(out.path): --out is not empty; choose a new output directory")
            }
            guard access(out.path, W_OK) == 0 else { throw ESFTError("\(out.path): --out \(ErrorText.posix(errno))") }
            return
        }
        var ancestor = out.deletingLastPathComponent()
        while !fm.fileExists(atPath: ancestor.path, isDirectory: &isDirectory), ancestor.path != "/" { ancestor.deleteLastPathComponent() }
        guard isDirectory.boolValue else { throw ESFTError("\(out.path): --out: \(ancestor.path) is an existing file, not a directory") }
        guard access(ancestor.path, W_OK) == 0 else { throw ESFTError("\(out.path): --out: \(ancestor.path) \(ErrorText.posix(errno))") }
    }

    /// Creates --out (or checks it is still empty), takes its lock, and when resuming removes the temporaries a
    /// killed writer of the run's files left. Rank 0 only; the lock is released by the caller when the run ends.
    public static func prepare(_ out: URL, resuming: Bool, note: (String) -> Void) throws -> OutputLock {
        let fm = FileManager.default
        if resuming && fm.fileExists(atPath: out.path) {
            let lock = try OutputLock.acquire(in: out, note: note)  // before touching anything a running job owns
            for name in (try? fm.contentsOfDirectory(atPath: out.path)) ?? [] where runFiles.contains(where: { name.hasPrefix(".\($0).tmp-") }) {
                try? fm.removeItem(at: out.appendingPathComponent(name))
            }
            return lock
        }
        if fm.fileExists(atPath: out.path) {
            guard (try fm.contentsOfDirectory(atPath: out.path)).isEmpty else {
                throw ESFTError("\(out.path) is not empty; choose a new output directory")
            }
        } else {
            do { try fm.createDirectory(at: out, withIntermediateDirectories: true) } catch {
                throw ESFTError("\(out.path): cannot create --out (\(ErrorText.reason(error)))")
            }
        }
        return try OutputLock.acquire(in: out, note: note)
    }
}

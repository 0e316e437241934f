import Foundation

/// The one form of every error line: `esft <command>: error: <file>: <field or tensor>: <what is wrong>`,
/// and the translation of Foundation's errors (whose own text is "NSCocoaErrorDomain error 512") into words
/// a user can act on.
public enum ErrorText {
    /// The line a command prints on stderr before it exits non-zero.
    public static func line(command: String, _ error: Error) -> String {
        "esft \(command): error: \(message(error))"
    }

    /// An ESFTError's message; a Foundation error as "<path>: <reason>"; anything else as Swift prints it.
    /// A temporary name (AtomicWrite's `.NAME.tmp-PID`, removed on failure) is shown as the output it stood for.
    public static func message(_ error: Error) -> String {
        if let e = error as? ESFTError { return outputNames(e.message) }
        let ns = error as NSError
        guard ns.domain == NSCocoaErrorDomain || ns.domain == NSPOSIXErrorDomain else { return "\(error)" }
        let reason = self.reason(error)
        return outputNames(path(of: ns).map { "\($0): \(reason)" } ?? reason)
    }

    /// `/dir/.out.h5.tmp-123` → `/dir/out.h5`.
    static func outputNames(_ text: String) -> String {
        text.replacingOccurrences(of: #"/\.([^/\s'"]+)\.tmp-[0-9]+"#, with: "/$1", options: .regularExpression)
    }

    /// `<file>: <field>: <what>`, the form of a check on one field of one file.
    public static func field(_ file: String, _ field: String, _ what: String) -> String { "\(file): \(field): \(what)" }

    /// A value as the user wrote it: strings quoted (so "64" is not mistaken for 64), booleans as true/false.
    public static func value(_ v: JSONValue) -> String {
        JSONReader(value: v, source: "").describe
    }

    /// The path a Foundation error is about, when it records one.
    public static func path(of error: NSError) -> String? {
        (error.userInfo[NSFilePathErrorKey] as? String) ?? (error.userInfo[NSURLErrorKey] as? URL)?.path
    }

    /// Why a file operation failed, in words: the POSIX cause when Foundation recorded one (it is the
    /// most specific), else the Cocoa code's meaning. Use it instead of `localizedDescription`.
    public static func reason(_ error: Error) -> String {
        if let e = error as? ESFTError { return e.message }
        let ns = error as NSError
        if ns.domain == NSPOSIXErrorDomain { return posix(Int32(ns.code)) }
        if let underlying = ns.userInfo[NSUnderlyingErrorKey] as? NSError, underlying.domain == NSPOSIXErrorDomain {
            return posix(Int32(underlying.code))
        }
        guard ns.domain == NSCocoaErrorDomain else { return ns.localizedDescription }
        switch ns.code {                      // CocoaError.Code raw values
        case 4, 260: return "no such file or directory"
        case 257, 513: return "permission denied"
        case 642: return "is read-only (on a read-only file system)"
        case 516: return "already exists"
        case 640: return "no space left on the device"
        case 3840:  // JSONSerialization: a syntax error, or nesting deeper than it reads
            return (ns.userInfo[NSDebugDescriptionErrorKey] as? String) ?? "not valid JSON"
        case 258, 514: return "is not a valid file name"
        case 259: return "is not in the expected format"
        case 261, 517: return "is not valid text in the expected encoding"
        default: return "file operation failed (Foundation error \(ns.code))"
        }
    }

    /// errno in words; the cases users meet are phrased to say what to change.
    public static func posix(_ code: Int32) -> String {
        switch code {
        case EROFS: return "is read-only (on a read-only file system)"
        case EACCES, EPERM: return "permission denied"
        case ENOTDIR: return "a part of the path is an existing file, not a directory"
        case EEXIST: return "already exists"
        case ENOENT: return "no such file or directory"
        case ENOSPC: return "no space left on the device"
        case EISDIR: return "is a directory, not a file"
        case EDQUOT: return "disk quota exceeded"
        default: return String(cString: strerror(code))
        }
    }
}

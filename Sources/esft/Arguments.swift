import ESFTKernels
import Foundation

/// Minimal option parsing: `--name VALUE`, `--name=VALUE`, flags, and a check that nothing unknown is left.
struct Arguments {
    private var args: [String]
    let command: String
    /// Every option and flag the command asked for: what an unknown one is compared with.
    private var known: Set<String> = ["--help"]

    init(_ args: [String], command: String) { self.args = args; self.command = command }

    var wantsHelp: Bool { args.contains("--help") || args.contains("-h") }

    /// The value of `--name VALUE` or `--name=VALUE`; given more than once, the last one wins.
    mutating func option(_ name: String) throws -> String? {
        known.insert(name)
        var value: String?
        var i = 0
        while i < args.count {
            let a = args[i]
            if a == name {
                guard i + 1 < args.count, !args[i + 1].hasPrefix("--") else {
                    throw ESFTError("\(name) needs a value (see esft \(command) --help)")
                }
                value = args[i + 1]
                args.removeSubrange(i...(i + 1))
            } else if a.hasPrefix(name + "=") {
                value = String(a.dropFirst(name.count + 1))
                args.remove(at: i)
            } else {
                i += 1
            }
        }
        return value
    }

    /// The first `--name VALUE` (removed), for options that may be given several times (call until nil).
    mutating func firstOption(_ name: String) throws -> String? {
        guard let i = args.firstIndex(where: { $0 == name || $0.hasPrefix(name + "=") }) else { return nil }
        if args[i] == name {
            guard i + 1 < args.count else { throw ESFTError("\(command): \(name) needs a value (see esft \(command) --help)") }
            defer { args.removeSubrange(i...(i + 1)) }
            return args[i + 1]
        }
        defer { args.remove(at: i) }
        return String(args[i].dropFirst(name.count + 1))
    }

    /// `--name` alone (.some(nil)), `--name VALUE` / `--name=VALUE` (.some(value)), or absent (nil).
    mutating func optionalValue(_ name: String) -> String?? {
        known.insert(name)
        if let i = args.firstIndex(where: { $0.hasPrefix(name + "=") }) {
            defer { args.remove(at: i) }
            return .some(String(args[i].dropFirst(name.count + 1)))
        }
        guard let i = args.firstIndex(of: name) else { return nil }
        if i + 1 < args.count, !args[i + 1].hasPrefix("-") {
            defer { args.removeSubrange(i...(i + 1)) }
            return .some(args[i + 1])
        }
        args.remove(at: i)
        return .some(nil)
    }

    mutating func required(_ name: String) throws -> String {
        guard let v = try option(name) else {
            if let a = args.first(where: { $0.hasPrefix("--") && OptionSpelling.suggestion(for: $0, known: [name]) == name }) {
                throw ESFTError("unknown option \(a); did you mean \(name)? (see esft \(command) --help)")
            }
            throw ESFTError("\(name) is required (see esft \(command) --help)")
        }
        return v
    }

    mutating func int(_ name: String, default value: Int? = nil, min: Int = 0) throws -> Int? {
        guard let s = try option(name) else { return value }
        guard let v = Int(s), v >= min else { throw ESFTError("\(name) must be an integer ≥ \(min), got '\(s)'") }
        return v
    }

    /// `--threads N`, the same in every command: N ≥ 1 kernel and GEMM threads; 0 or absent: the cores
    /// this process may use (its affinity mask), as Threads.defaultCount() counts them.
    mutating func threads() throws -> Int {
        let n = try int("--threads", default: 0, min: 0)!
        return n > 0 ? n : Threads.defaultCount()
    }

    /// `--gemm` and `--compute`, the same in every command that computes: validated and applied to the GEMM layer.
    mutating func gemm() throws {
        try GEMMLayer.configure(gemm: try option("--gemm") ?? "openblas", compute: try option("--compute") ?? "fp32")
    }

    /// Puts an option back (a command that looked at it early, for checks, before the code that reads it).
    mutating func restore(_ name: String, _ value: String) { args += [name, value] }

    mutating func double(_ name: String) throws -> Double? {
        guard let s = try option(name) else { return nil }
        guard let v = Double(s), v.isFinite else { throw ESFTError("\(name) must be a number, got '\(s)'") }
        return v
    }

    mutating func flag(_ name: String) -> Bool {
        known.insert(name)
        guard let i = args.firstIndex(of: name) else { return false }
        args.remove(at: i)
        return true
    }

    /// Exactly `count` positional arguments (anything not starting with "--"), removed from the list.
    mutating func positional(_ count: Int, names: String) throws -> [String] {
        let values = args.filter { !$0.hasPrefix("-") }
        guard values.count >= count else {
            throw ESFTError("expected \(names) (see esft \(command) --help)")
        }
        let taken = Array(values.prefix(count))
        for v in taken { args.remove(at: args.firstIndex(of: v)!) }
        return taken
    }

    /// Fails on anything not consumed: a misspelt option must not be silently ignored.
    func finish() throws {
        if let a = args.first(where: { $0.hasPrefix("-") }) ?? args.first {
            if a.hasPrefix("--"), let near = OptionSpelling.suggestion(for: a, known: known) {
                throw ESFTError("unknown option \(a); did you mean \(near)? (see esft \(command) --help)")
            }
            throw ESFTError("unknown \(a.hasPrefix("-") ? "option" : "argument") '\(a)' (see esft \(command) --help)")
        }
    }
}

import Foundation

/// `esft-fuzz TARGET FILE...` runs each file through a parser (FuzzTargets) and exits 0 if none crashed: the
/// seed corpora and every input that once crashed, replayed by the tests. Built by scripts/fuzz.sh with
/// `-sanitize=fuzzer,address -DESFT_FUZZ`, `esft-fuzz TARGET [libFuzzer options] [CORPUS...]` fuzzes TARGET.
@main
struct FuzzMain {
    nonisolated(unsafe) static var target: (Data) -> Bool = { _ in false }

    static func main() {
        var args = CommandLine.arguments
        // The target is the first argument; libFuzzer's -fork children are started without it, and find it in
        // ESFT_FUZZ_TARGET, which the parent sets.
        let name: String
        if args.count >= 2, FuzzTargets.all[args[1]] != nil {
            name = args.remove(at: 1)
            setenv("ESFT_FUZZ_TARGET", name, 1)
        } else if let inherited = ProcessInfo.processInfo.environment["ESFT_FUZZ_TARGET"], FuzzTargets.all[inherited] != nil {
            name = inherited
        } else {
            FileHandle.standardError.write(Data("usage: esft-fuzz TARGET FILE... (targets: \(FuzzTargets.all.keys.sorted().joined(separator: ", ")))\n".utf8))
            exit(2)
        }
        target = FuzzTargets.all[name]!  // checked just above
        defer { try? FileManager.default.removeItem(at: FuzzTargets.scratch) }
        #if ESFT_FUZZ
        var argc = Int32(args.count)
        var cargs: [UnsafeMutablePointer<CChar>?] = args.map { strdup($0) } + [nil]
        let status = cargs.withUnsafeMutableBufferPointer { buffer -> Int32 in
            var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = buffer.baseAddress
            return LLVMFuzzerRunDriver(&argc, &argv, fuzzOneInput)
        }
        exit(status)
        #else
        var accepted = 0
        for path in args.dropFirst() {
            guard let data = FileManager.default.contents(atPath: path) else {
                FileHandle.standardError.write(Data("esft-fuzz: cannot read \(path)\n".utf8))
                exit(2)
            }
            if target(data) { accepted += 1 }
        }
        print("esft-fuzz: \(args.count - 1) input(s) through \(name), \(accepted) accepted: no crash")
        #endif
    }
}

#if ESFT_FUZZ
/// libFuzzer's entry point (its archive needs the symbol; the driver above gets the same function).
@_cdecl("LLVMFuzzerTestOneInput")
func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    _ = FuzzMain.target(size == 0 ? Data() : Data(bytes: data!, count: size))
    return 0
}

/// libFuzzer's driver (linked by -sanitize=fuzzer): runs the fuzzing loop with its own command line.
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(_ argc: UnsafeMutablePointer<Int32>,
                         _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
                         _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32) -> Int32
#endif

// Encoding throughput, for benchmarks and reports (never asserted in tests: timings depend on
// the machine and its load).
import Foundation

public enum TokenizerBenchmark {
    /// Encodes `text` on the calling thread and returns UTF-8 megabytes (10^6 bytes) per second.
    /// Runs one untimed pass first, so the BPE cache is warm as in a long data-loading run, then
    /// repeats the timed pass until at least `minimumSeconds` have elapsed.
    public static func encodeThroughput(tokenizer: any TextTokenizer, text: String,
                                        minimumSeconds: Double = 1.0) -> Double {
        let bytes = Double(text.utf8.count)
        guard bytes > 0 else { return 0 }
        var sink = tokenizer.encode(text).count
        var passes = 0
        let start = DispatchTime.now().uptimeNanoseconds
        var elapsed = 0.0
        repeat {
            sink &+= tokenizer.encode(text).count
            passes += 1
            elapsed = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        } while elapsed < minimumSeconds
        if sink == Int.min { print(sink) }  // keeps the work observable to the optimizer
        return bytes * Double(passes) / elapsed / 1e6
    }
}

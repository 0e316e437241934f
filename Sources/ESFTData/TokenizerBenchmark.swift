// Encoding throughput, for benchmarks and reports (never asserted in tests: timings depend on
// the machine and its load).
import Foundation

public enum TokenizerBenchmark {
    /// Encodes `text` `passes` times on the calling thread; returns UTF-8 megabytes (10^6 bytes)
    /// per second over all passes. The first pass starts from whatever the tokenizer's caches
    /// hold (nothing, for a freshly loaded tokenizer: the rate of a one-pass data-loading run);
    /// later passes find every piece cached, so `passes > 1` shows the warm rate.
    public static func encodeThroughput(tokenizer: any TextTokenizer, text: String, passes: Int = 1) -> Double {
        let bytes = Double(text.utf8.count)
        guard bytes > 0, passes > 0 else { return 0 }
        var tokens = 0
        let start = DispatchTime.now().uptimeNanoseconds
        for _ in 0..<passes { tokens &+= tokenizer.encode(text).count }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        if tokens == Int.min { print(tokens) }  // keeps the work observable to the optimizer
        return bytes * Double(passes) / seconds / 1e6
    }
}

import Foundation

/// This process's memory as the kernel accounts it: resident set, the anonymous part of it (heap,
/// activations, optimizer state — what cannot be dropped), and the resident peak.
public struct MemoryUsage: Codable, Sendable {
    public var rssBytes: Int
    public var anonymousBytes: Int
    public var peakRSSBytes: Int

    public init(rssBytes: Int, anonymousBytes: Int, peakRSSBytes: Int) {
        self.rssBytes = rssBytes; self.anonymousBytes = anonymousBytes; self.peakRSSBytes = peakRSSBytes
    }

    /// Reads /proc/self/smaps_rollup (Rss, Anonymous) and /proc/self/status (VmHWM).
    public static func current() -> MemoryUsage {
        func kB(_ text: String, _ key: String) -> Int {
            guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix(key) }) else { return 0 }
            return (Int(line.dropFirst(key.count).trimmingCharacters(in: .whitespaces).split(separator: " ").first ?? "0") ?? 0) * 1024
        }
        let rollup = (try? String(contentsOfFile: "/proc/self/smaps_rollup", encoding: .utf8)) ?? ""
        let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
        return MemoryUsage(rssBytes: kB(rollup, "Rss:"), anonymousBytes: kB(rollup, "Anonymous:"), peakRSSBytes: kB(status, "VmHWM:"))
    }

    public var summary: String {
        String(format: "rss %.1f MiB (anonymous %.1f MiB), peak rss %.1f MiB",
               Double(rssBytes) / 1048576, Double(anonymousBytes) / 1048576, Double(peakRSSBytes) / 1048576)
    }
}

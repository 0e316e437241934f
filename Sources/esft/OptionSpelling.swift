/// Suggests the option a user probably meant: `--batch_rows` → `--batch-rows` (underscores, case), or the
/// known option within two edits (`--step` → `--steps`).
enum OptionSpelling {
    static func suggestion(for given: String, known: Set<String>) -> String? {
        let name = String(given.split(separator: "=", maxSplits: 1).first ?? Substring(given))
        let normal = name.lowercased().replacingOccurrences(of: "_", with: "-")
        if normal != name, known.contains(normal) { return normal }
        let scored = known.map { ($0, distance(normal, $0)) }.filter { $0.1 <= 2 }
        return scored.min { $0.1 != $1.1 ? $0.1 < $1.1 : $0.0 < $1.0 }?.0
    }

    /// Levenshtein distance (options are short: the quadratic table is nothing).
    static func distance(_ a: String, _ b: String) -> Int {
        let x = Array(a.utf8), y = Array(b.utf8)
        var previous = Array(0...y.count), current = previous
        for i in 1...max(x.count, 1) where !x.isEmpty {
            current[0] = i
            for j in stride(from: 1, through: y.count, by: 1) {
                current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x[i - 1] == y[j - 1] ? 0 : 1))
            }
            swap(&previous, &current)
        }
        return x.isEmpty ? y.count : previous[y.count]
    }
}

import ESFTStore
import Foundation

/// Writes a whole file atomically (temporary name, then rename): a failure leaves nothing behind.
func writeFile(_ data: Data, to url: URL) throws {
    try writeAtomically(to: url) { try $0.write(contentsOf: data) }
}

/// Writes several files; if a later one fails, the earlier ones are removed again so a command
/// either leaves all its outputs or none.
func writeFiles(_ files: [(URL, Data)]) throws {
    var written: [URL] = []
    do {
        for (url, data) in files {
            try writeFile(data, to: url)
            written.append(url)
        }
    } catch {
        for url in written { try? FileManager.default.removeItem(at: url) }
        throw error
    }
}

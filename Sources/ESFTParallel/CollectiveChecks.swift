import ESFTBase

/// Argument checks shared by both communicators, so a bad call fails the same way on one rank as on
/// many (and is caught by single-process tests) instead of corrupting memory inside MPI.
enum CollectiveChecks {
    static func name(_ collective: String, _ tag: String?) -> String {
        tag.map { "\(collective) '\($0)'" } ?? collective
    }

    static func root(_ root: Int, size: Int, _ collective: String, _ tag: String?) throws {
        guard (0..<size).contains(root) else {
            throw ESFTError("\(name(collective, tag)): root \(root) is not a rank of this \(size)-rank job")
        }
    }

    /// MPI counts are C ints.
    static func int32(_ n: Int, _ what: String, _ collective: String, _ tag: String?) throws -> Int32 {
        guard n >= 0, n <= Int(Int32.max) else {
            throw ESFTError("\(name(collective, tag)): \(what) \(n) is outside 0...\(Int32.max) elements; split the exchange")
        }
        return Int32(n)
    }

    static func allToAll(count: Int, size: Int, _ tag: String?) throws {
        guard count == size else {
            throw ESFTError("\(name("allToAll", tag)): \(count) values given, need one per rank (\(size))")
        }
    }

    /// Checks one side (send or receive) of an all-to-all-v; returns counts and displacements as C ints.
    static func allToAllVSide(_ side: String, counts: [Int], displacements: [Int], bufferCount: Int,
                              size: Int, _ tag: String?) throws -> (counts: [Int32], displacements: [Int32]) {
        let n = name("allToAllV", tag)
        guard counts.count == size, displacements.count == size else {
            throw ESFTError("\(n): \(counts.count) \(side) counts and \(displacements.count) \(side) displacements, need one per rank (\(size))")
        }
        var c32 = [Int32](), d32 = [Int32]()
        c32.reserveCapacity(size); d32.reserveCapacity(size)
        for r in 0..<size {
            let c = try int32(counts[r], "\(side) count for rank \(r)", "allToAllV", tag)
            let d = try int32(displacements[r], "\(side) displacement for rank \(r)", "allToAllV", tag)
            guard counts[r] == 0 || displacements[r] + counts[r] <= bufferCount else {
                throw ESFTError("\(n): \(side) segment for rank \(r) (\(displacements[r]) + \(counts[r]) elements) exceeds the \(bufferCount)-element \(side) buffer")
            }
            c32.append(c); d32.append(d)
        }
        return (c32, d32)
    }
}

/// The element types rows and collectives move. The MPI datatype for each lives in ESFTParallel
/// (MPIRuntime), so nothing here names an MPI symbol.
public protocol CollectiveElement: Equatable, Sendable, BitwiseCopyable {
    static var elementKind: CollectiveElementKind { get }
}

public enum CollectiveElementKind: Sendable { case float32, float64, int32, int64, uint8 }

extension Float: CollectiveElement { public static var elementKind: CollectiveElementKind { .float32 } }
extension Double: CollectiveElement { public static var elementKind: CollectiveElementKind { .float64 } }
extension Int32: CollectiveElement { public static var elementKind: CollectiveElementKind { .int32 } }
extension Int64: CollectiveElement { public static var elementKind: CollectiveElementKind { .int64 } }
extension UInt8: CollectiveElement { public static var elementKind: CollectiveElementKind { .uint8 } }

/// Moves rows between ranks: the one row-exchange abstraction (MoE dispatch, gathers to rank 0). The
/// caller plans the rows; an implementation only moves them. `LocalExchange` is the one-rank identity;
/// ESFTParallel's `CommunicatorExchange` runs it over MPI. Every rank calls the same exchanges in the
/// same order, with zero rows if it has none. Counts are in rows; `tag` names the call in the counters.
public protocol RowExchange: AnyObject {
    var rank: Int { get }
    var ranks: Int { get }
    /// All-to-all of per-destination row counts: returns what each source rank will send here.
    func exchangeCounts(_ sendCounts: [Int], tag: String?) throws -> [Int]
    /// All-to-all-v of rows of `width` elements: `send` grouped by destination, `receive` grouped by
    /// source, each packed back to back (nil only where the side has no rows).
    func exchangeRows<T: CollectiveElement>(send: UnsafePointer<T>?, sendCounts: [Int], receive: UnsafeMutablePointer<T>?,
                                            receiveCounts: [Int], width: Int, tag: String?) throws
}

/// The one-rank exchange: the identity (a copy), and no MPI.
public final class LocalExchange: RowExchange {
    public init() {}
    public var rank: Int { 0 }
    public var ranks: Int { 1 }
    public func exchangeCounts(_ sendCounts: [Int], tag: String?) throws -> [Int] { sendCounts }
    public func exchangeRows<T: CollectiveElement>(send: UnsafePointer<T>?, sendCounts: [Int], receive: UnsafeMutablePointer<T>?,
                                                   receiveCounts: [Int], width: Int, tag: String?) throws {
        let n = sendCounts[0] * width
        guard n > 0, let send, let receive else { return }
        if send != UnsafePointer(receive) { receive.update(from: send, count: n) }
    }
}

/// The rows a rank received from an exchange: `rowsFrom[s]` rows from rank s, stored in rank order.
public struct ReceivedRows<T: CollectiveElement> {
    public let values: [T]
    public let rowsFrom: [Int]
    public let width: Int
}

public extension RowExchange {
    /// Sends `rowsTo[s]` consecutive rows of `width` elements to rank s (the rows for rank 0 first,
    /// then rank 1's, ...), after telling every rank how many to expect (counts, then rows). Both
    /// calls are counted under `tag`.
    func exchangeRows<T: CollectiveElement>(_ send: UnsafeBufferPointer<T>, rowsTo: [Int], width: Int,
                                            tag: String? = nil) throws -> ReceivedRows<T> {
        let name = tag.map { "exchangeRows '\($0)'" } ?? "exchangeRows"
        guard width >= 0 else { throw ESFTError("\(name): row width \(width) is negative") }
        guard rowsTo.count == ranks, rowsTo.allSatisfy({ $0 >= 0 }) else {
            throw ESFTError("\(name): need \(ranks) non-negative row counts, got \(rowsTo)")
        }
        guard rowsTo.reduce(0, +) * width == send.count else {
            throw ESFTError("\(name): \(rowsTo.reduce(0, +)) rows of \(width) do not fill the \(send.count)-element send buffer")
        }
        let rowsFrom = try exchangeCounts(rowsTo, tag: tag)
        let total = rowsFrom.reduce(0, +) * width
        let values = try [T](unsafeUninitializedCapacity: total) { buffer, initialized in
            try exchangeRows(send: send.baseAddress, sendCounts: rowsTo, receive: buffer.baseAddress, receiveCounts: rowsFrom,
                             width: width, tag: tag)
            initialized = total
        }
        return ReceivedRows(values: values, rowsFrom: rowsFrom, width: width)
    }
}

/// Where each rank's segment starts when the segments are packed back to back (exclusive prefix sums),
/// the usual all-to-all-v displacements.
public func packedDisplacements(_ counts: [Int]) -> [Int] {
    var out = [Int](), run = 0
    out.reserveCapacity(counts.count)
    for c in counts { out.append(run); run += c }
    return out
}

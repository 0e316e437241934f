import ESFTBase
import Foundation

/// Runs `body`; if it throws on any rank, prints `esft: rank R of N: error: <message>` and aborts
/// the whole job (MPI_Abort), so the other ranks are not left waiting forever in a collective.
/// Never returns on error; the exit status is non-zero.
@discardableResult
public func runRanked<T>(_ comm: Communicator, _ body: () throws -> T) -> T {
    do {
        return try body()
    } catch {
        comm.abort(message: ErrorText.message(error))
    }
}

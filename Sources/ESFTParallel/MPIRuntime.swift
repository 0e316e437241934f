import CMPI
import CMPIShims
import ESFTBase
import Foundation

/// Process-wide MPI state: MPI may be initialised once and finalised once per process, ever.
enum MPIRuntime {
    private static let lock = NSLock()
    private static var initializedByUs = false
    /// The thread that initialised MPI: under MPI_THREAD_FUNNELED the only one allowed to call it.
    private static var mainThread: pthread_t?

    /// For debug-build assertions in every collective.
    static var onMPIThread: Bool { mainThread.map { pthread_equal($0, pthread_self()) != 0 } ?? true }

    /// True between our MPI_Init_thread and MPI_Finalize (MPI_Abort is only valid then).
    static var isActive: Bool {
        var initialized: Int32 = 0, finalized: Int32 = 0
        MPI_Initialized(&initialized)
        MPI_Finalized(&finalized)
        return initialized != 0 && finalized == 0
    }

    /// Initialises MPI with MPI_THREAD_FUNNELED unless already done. FUNNELED because our kernel
    /// threads (Dispatch, OpenBLAS) never call MPI: only the main thread does, and the weaker level
    /// keeps MPI's fast paths (no internal locking). Fails if MPI cannot give at least that.
    static func initialize() throws {
        lock.lock(); defer { lock.unlock() }
        var initialized: Int32 = 0, finalized: Int32 = 0
        MPI_Initialized(&initialized)
        MPI_Finalized(&finalized)
        guard finalized == 0 else { throw ESFTError("MPI was already finalized in this process; it cannot be started again") }
        if initialized != 0 {
            var provided: Int32 = 0
            MPI_Query_thread(&provided)
            try checkThreadLevel(provided)
            return
        }
        var provided: Int32 = 0
        let rc = MPI_Init_thread(nil, nil, Int32(MPI_THREAD_FUNNELED), &provided)
        guard rc == MPI_SUCCESS else { throw ESFTError("MPI_Init_thread failed (code \(rc)); is this process started by mpirun or srun?") }
        initializedByUs = true
        mainThread = pthread_self()
        try checkThreadLevel(provided)
    }

    private static func checkThreadLevel(_ provided: Int32) throws {
        guard provided >= Int32(MPI_THREAD_FUNNELED) else {
            throw ESFTError("the MPI library provides thread level \(threadLevelName(provided)), esft needs at least MPI_THREAD_FUNNELED")
        }
    }

    static func threadLevelName(_ level: Int32) -> String {
        switch Int(level) {
        case Int(MPI_THREAD_SINGLE): return "MPI_THREAD_SINGLE"
        case Int(MPI_THREAD_FUNNELED): return "MPI_THREAD_FUNNELED"
        case Int(MPI_THREAD_SERIALIZED): return "MPI_THREAD_SERIALIZED"
        case Int(MPI_THREAD_MULTIPLE): return "MPI_THREAD_MULTIPLE"
        default: return "\(level)"
        }
    }

    static var threadLevel: String {
        var provided: Int32 = 0
        MPI_Query_thread(&provided)
        return threadLevelName(provided)
    }

    /// Finalises MPI if we started it and nobody finalised it yet; safe to call more than once.
    static func finalize() throws {
        lock.lock(); defer { lock.unlock() }
        guard initializedByUs, isActive else { return }
        try check(MPI_Finalize(), "MPI_Finalize")
    }

    /// "Open MPI v4.1.4, package: ..." trimmed to its first clause.
    static var libraryVersion: String {
        var buf = [CChar](repeating: 0, count: Int(MPI_MAX_LIBRARY_VERSION_STRING) + 1)
        var len: Int32 = 0
        MPI_Get_library_version(&buf, &len)
        let full = String(decoding: buf.prefix(Int(len)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return full.split(separator: ",").first.map { String($0).trimmingCharacters(in: .whitespacesAndNewlines) } ?? full
    }

    /// Turns an MPI return code into an error naming the call (our communicator uses MPI_ERRORS_RETURN).
    static func check(_ rc: Int32, _ what: @autoclosure () -> String) throws {
        guard rc != MPI_SUCCESS else { return }
        throw ESFTError("\(what()): MPI error \(rc): \(errorString(rc))")
    }

    static func errorString(_ rc: Int32) -> String {
        var buf = [CChar](repeating: 0, count: Int(MPI_MAX_ERROR_STRING) + 1)
        var len: Int32 = 0
        guard MPI_Error_string(rc, &buf, &len) == MPI_SUCCESS else { return "unknown error" }
        return String(decoding: buf.prefix(Int(len)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    static func datatype<T: CollectiveElement>(_: T.Type) -> MPI_Datatype {
        switch T.elementKind {
        case .float32: return esft_mpi_float()
        case .float64: return esft_mpi_double()
        case .int32: return esft_mpi_int32()
        case .int64: return esft_mpi_int64()
        case .uint8: return esft_mpi_uint8()
        }
    }
}

import Dispatch
import Foundation
import Synchronization

/// SIGTERM and SIGUSR1 (what SLURM sends before it kills or requeues a job) become a request to stop at
/// the next step boundary with a checkpoint, instead of killing the process. The signals are ignored as
/// such and delivered to a dispatch source, so no handler runs inside the training code, and a second
/// signal while the checkpoint is written changes nothing.
public final class StopSignals {
    private let received = Atomic<Int32>(0)
    private var sources: [any DispatchSourceSignal] = []

    /// `log` is called once per signal, from a dispatch queue.
    public init(_ signals: [Int32] = [SIGTERM, SIGUSR1], log: @escaping (String) -> Void) {
        let queue = DispatchQueue(label: "esft.stop-signals")
        for s in signals {
            Glibc.signal(s, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: s, queue: queue)
            source.setEventHandler { [unowned self] in
                let first = received.compareExchange(expected: 0, desired: s, ordering: .relaxed).exchanged
                log(first ? "esft train: received \(Self.name(s)): stopping after this step with a checkpoint"
                          : "esft train: received \(Self.name(s)) again: already stopping")
            }
            source.resume()
            sources.append(source)
        }
    }

    deinit { for s in sources { s.cancel() } }

    /// The first signal received, if any.
    public var receivedSignal: Int32? {
        let s = received.load(ordering: .relaxed)
        return s == 0 ? nil : s
    }

    public static func name(_ s: Int32) -> String {
        switch s { case SIGTERM: return "SIGTERM"; case SIGUSR1: return "SIGUSR1"; default: return "signal \(s)" }
    }
}

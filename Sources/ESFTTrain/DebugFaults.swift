import ESFTBase
import Foundation

/// Faults the fault tests inject into a real run (docs/testing.md, the fault matrix), from the environment:
/// ESFT_FAILPOINT holds one or more, comma separated:
///   checkpoint-kill:RANK:STEP:N   rank RANK kills itself (SIGKILL) after writing its N-th array of the checkpoint
///                                 of step STEP
///   step-delay:RANK:SECONDS       rank RANK sleeps SECONDS at the start of every step (a slow but live rank)
///   nan-gradient:RANK:STEP        rank RANK's first trainable gradient becomes NaN in step STEP (1-based)
/// Unset, each costs a comparison per step (or per checkpoint).
struct DebugFaults {
    var kill: (rank: Int, step: Int, arrays: Int)?
    var delay: (rank: Int, seconds: Double)?
    var nanGradient: (rank: Int, step: Int)?

    static let variable = "ESFT_FAILPOINT"

    static func fromEnvironment(_ env: [String: String] = ProcessInfo.processInfo.environment) throws -> DebugFaults {
        var faults = DebugFaults()
        guard let spec = env[variable], !spec.isEmpty else { return faults }
        for item in spec.split(separator: ",") {
            let parts = item.split(separator: ":").map(String.init)
            let numbers = parts.dropFirst().map { Double($0) }
            guard !numbers.contains(nil), numbers.allSatisfy({ $0! >= 0 }) else {
                throw ESFTError("\(variable)=\(spec): '\(item)' has a value that is not a non-negative number (see docs/testing.md)")
            }
            let v = numbers.map { $0! }
            switch (parts.first, v.count) {
            case ("checkpoint-kill", 3): faults.kill = (Int(v[0]), Int(v[1]), Int(v[2]))
            case ("step-delay", 2): faults.delay = (Int(v[0]), v[1])
            case ("nan-gradient", 2): faults.nanGradient = (Int(v[0]), Int(v[1]))
            default:
                throw ESFTError("\(variable)=\(spec): unknown fault '\(item)' (checkpoint-kill:RANK:STEP:N, step-delay:RANK:SECONDS, nan-gradient:RANK:STEP)")
            }
        }
        return faults
    }

    /// After how many arrays of the checkpoint of `step` this rank kills itself; -1: never.
    func checkpointKill(rank: Int, step: Int) -> Int {
        guard let k = kill, k.rank == rank, k.step == step else { return -1 }
        return k.arrays
    }

    func delay(rank: Int) {
        if let d = delay, d.rank == rank { Thread.sleep(forTimeInterval: d.seconds) }
    }

    /// Whether this rank poisons a gradient in `step` (1-based).
    func poisons(rank: Int, step: Int) -> Bool { nanGradient.map { $0.rank == rank && $0.step == step } ?? false }
}

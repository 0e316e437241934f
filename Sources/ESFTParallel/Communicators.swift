import ESFTBase
import Foundation

/// Chooses the communicator for a command, so every command also works without mpirun.
public enum Communicators {
    /// MPI when `useMPI`, else a single process (which never touches MPI).
    public static func make(useMPI: Bool) throws -> Communicator {
        useMPI ? try MPICommunicator() : SingleProcessCommunicator()
    }

    /// MPI when this process was started by a parallel launcher, single-process otherwise.
    public static func fromEnvironment(_ environment: [String: String] = ProcessInfo.processInfo.environment) throws -> Communicator {
        try make(useMPI: launchedByMPI(environment))
    }

    /// Whether a launcher started us as one rank of a job.
    /// - `ESFT_MPI=1` / `ESFT_MPI=0` overrides the detection (e.g. a 1-rank MPI job without mpirun).
    /// - Open MPI's mpirun sets OMPI_COMM_WORLD_SIZE; PMIx launchers (srun --mpi=pmix, prterun) set
    ///   PMIX_RANK; MPICH/Hydra and srun's PMI set PMI_RANK.
    /// - SLURM_PROCID alone is not enough: a batch script has it too. It counts only when the step
    ///   has more than one task (then srun is starting several copies of us).
    public static func launchedByMPI(_ env: [String: String]) -> Bool {
        if let forced = env["ESFT_MPI"], let on = parseSwitch(forced) { return on }
        if env["OMPI_COMM_WORLD_SIZE"] != nil || env["PMIX_RANK"] != nil || env["PMI_RANK"] != nil { return true }
        if env["SLURM_PROCID"] != nil, let tasks = Int(env["SLURM_STEP_NUM_TASKS"] ?? env["SLURM_NTASKS"] ?? ""), tasks > 1 {
            return true
        }
        return false
    }

    private static func parseSwitch(_ s: String) -> Bool? {
        switch s.lowercased() {
        case "1", "yes", "true", "on": return true
        case "0", "no", "false", "off": return false
        default: return nil
        }
    }
}

import ESFTKernels
import Foundation

let usage = """
esft — Expert-Specialized Fine-Tuning of Mixture-of-Experts models on CPU nodes

Usage: esft <command> [options]      (esft <command> --help for each command)

Commands:
  forward    Run a DeepSeek-V2 model on tokens; write logits, loss and (optionally) gradients
             to safetensors, for checking against Hugging Face transformers.
  mpi-check  Check every MPI collective esft uses, on any number of ranks, and measure all-to-all
             bandwidth: run it first on a new cluster (mpirun -n R esft mpi-check).

Common options:
  --threads N   threads for kernels and OpenBLAS (default: the cores this process may use)
"""

let commands: [String: ([String]) throws -> Void] = [
    "forward": ForwardCommand.run,
    "mpi-check": MPICheckCommand.run,
]

let argv = Array(CommandLine.arguments.dropFirst())
guard let name = argv.first, name != "--help", name != "-h", name != "help" else {
    print(usage)
    exit(argv.isEmpty ? 2 : 0)
}
guard let command = commands[name] else {
    FileHandle.standardError.write("esft: unknown command '\(name)'\n\n\(usage)\n".data(using: .utf8)!)
    exit(2)
}
do {
    try command(Array(argv.dropFirst()))
} catch let e as ESFTError {
    FileHandle.standardError.write("esft \(name): error: \(e.message)\n".data(using: .utf8)!)
    exit(1)
} catch {
    FileHandle.standardError.write("esft \(name): error: \(error)\n".data(using: .utf8)!)
    exit(1)
}

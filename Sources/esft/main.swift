import ESFTKernels
import Foundation

// Before anything else (MPI, threads, a product): refuse OpenBLAS kernels this CPU cannot run, then make
// OpenBLAS run the best kernels it supports.
if let why = BLASCore.unrunnableCoreType(environment: ProcessInfo.processInfo.environment, cpuFlags: CPUFeatures.flags()) {
    let name = CommandLine.arguments.dropFirst().first.map { "esft \($0)" } ?? "esft"
    FileHandle.standardError.write(Data("\(name): error: \(why)\n".utf8))
    exit(1)
}
BLASCore.ensureBestCore()

let usage = """
esft — Expert-Specialized Fine-Tuning of Mixture-of-Experts models on CPU nodes

Usage: esft <command> [options]      (esft <command> --help for each command)

Commands:
  import     Convert a Hugging Face checkpoint into an esft model directory (HDF5, memory-mappable).
  init       Write a randomly initialised model directory for a config.
  inspect    Describe a model directory: shards, dtypes, parameter counts, optimizer memory.
  export     Write a model (with trained tensors) as Hugging Face safetensors, an ESFT adapter, or HDF5.
  train      Train the selected experts (ESFT) or every parameter (--full), on one rank or under mpirun.
  forward    Run a model on tokens; write logits, loss and (optionally) gradients
             to safetensors, for checking against Hugging Face transformers.
  score      Measure how much a task uses each routed expert (ESFT relevance scores).
  select     Choose the experts to train from scores; write the expert config and a report.
  generate   Greedy text generation with a KV cache (prompts in batches), optionally with trained tensors.
  eval       Evaluate on the reference's eval files (exact-json intent metric) or held-out loss on any JSONL.
  tokenize   Print the token ids of text or JSONL lines (or decode ids), with 'bytes' or a tokenizer.json.
  data       data prepare: chat/text JSONL -> packed token dataset (HDF5) for training.
  bench      Measure forward and forward+backward throughput on a random model from a config.
  profile    Report what a run's expert-parallel exchanges moved (per layer, direction, pair of ranks)
             against the analytic minimum, and draw it as PNG pictures into RUN_DIR/profile/.
  plan       Predict a training job's memory and communication per rank; compare placements on routing logs.
  mpi-check  Check every MPI collective esft uses, on any number of ranks, and measure all-to-all
             bandwidth: run it first on a new cluster (mpirun -n R esft mpi-check).

Common options:
  --threads N   threads for kernels and OpenBLAS; 0 or absent: the cores this process may use (the same in
                every command)

Environment:
  ESFT_BLAS_AUTOCORE=0   keep the OpenBLAS kernels OpenBLAS chose, even when they are older than the CPU
                         supports (by default esft re-executes itself once with OPENBLAS_CORETYPE set)
  OPENBLAS_CORETYPE      respected when set, unless it names kernels this CPU cannot run (then esft refuses
                         to start, naming the missing instructions)
  DNNL_MAX_CPU_ISA       caps the instructions oneDNN uses (--gemm onednn); --compute bf16 needs AVX-512
"""

let commands: [String: ([String]) throws -> Void] = [
    "forward": ForwardCommand.run,
    "train": TrainCommand.run,
    "import": ImportCommand.run,
    "init": InitCommand.run,
    "inspect": InspectCommand.run,
    "export": ExportCommand.run,
    "score": ScoreCommand.run,
    "select": SelectCommand.run,
    "tokenize": TokenizeCommand.run,
    "generate": GenerateCommand.run,
    "eval": EvalCommand.run,
    "data": DataCommand.run,
    "bench": BenchCommand.run,
    "mpi-check": MPICheckCommand.run,
    "profile": ProfileCommand.run,
    "plan": PlanCommand.run,
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
} catch {
    FileHandle.standardError.write((ErrorText.line(command: name, error) + "\n").data(using: .utf8)!)
    exit(1)
}

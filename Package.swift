// swift-tools-version:6.0
// ESFT trainer: Expert-Specialized Fine-Tuning of Mixture-of-Experts models on CPU clusters.
// Depends on nothing but the toolchain and three C libraries found through pkg-config:
// OpenMPI (ompi), OpenBLAS (openblas), HDF5 (hdf5), and oneDNN (libdnnl, linked by name). See scripts/setup.sh.
import PackageDescription

let package = Package(
    name: "ESFT",
    products: [
        .executable(name: "esft", targets: ["esft"]),
    ],
    targets: [
        // C libraries, imported through pkg-config (no unsafeFlags).
        .systemLibrary(name: "CMPI", path: "Sources/CMPI", pkgConfig: "ompi",
                       providers: [.apt(["libopenmpi-dev", "openmpi-bin"])]),
        .systemLibrary(name: "COpenBLAS", path: "Sources/COpenBLAS", pkgConfig: "openblas",
                       providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CHDF5", path: "Sources/CHDF5", pkgConfig: "hdf5",
                       providers: [.apt(["libhdf5-dev"])]),
        // oneDNN (Debian 12 libdnnl-dev 2.6.3 ships no pkg-config file, so the module map links `dnnl`).
        .systemLibrary(name: "CDNNL", path: "Sources/CDNNL", providers: [.apt(["libdnnl-dev"])]),
        // oneDNN matmul primitives built in C (their descriptors are fixed C arrays), the OpenMP thread count; for ESFTKernels.
        .target(name: "CDNNLShims", dependencies: ["CDNNL"], linkerSettings: [.linkedLibrary("gomp")]),
        // The MPI macros Swift cannot import (MPI_COMM_WORLD, MPI_FLOAT, ...), one function each; for ESFTParallel.
        .target(name: "CMPIShims", dependencies: ["CMPI"]),
        // The HDF5 macros Swift cannot import (H5T_NATIVE_FLOAT, H5P_*, ...), one function each; for ESFTHDF5.
        .target(name: "CHDF5Shims", dependencies: ["CHDF5"]),

        // Project-wide basics without C: ESFTError, SplitMix64, FNV-1a, the JSON reader, atomic writes, range splits,
        // the RowExchange protocol (identity on one process).
        .target(name: "ESFTBase"),
        // fp32 buffers, the GEMM layer (OpenBLAS or oneDNN), elementwise kernels with their backward, threading. Re-exports ESFTBase.
        .target(name: "ESFTKernels", dependencies: ["ESFTBase", "COpenBLAS", "CDNNL", "CDNNLShims"]),
        // DeepSeek-V2 config, ParameterID (the one tensor identity), layers as forward/backward pairs with typed saved
        // state, the TokenDispatcher (expert-parallel MoE phases), loss.
        .target(name: "ESFTModel", dependencies: ["ESFTKernels"]),
        // HDF5 files whose datasets can be memory-mapped (contiguous, allocated early, aligned).
        .target(name: "ESFTHDF5", dependencies: ["ESFTBase", "CHDF5", "CHDF5Shims"]),
        // Weight files: safetensors (read/write), HDF5 model directories, import/export.
        .target(name: "ESFTStore", dependencies: ["ESFTKernels", "ESFTModel", "ESFTHDF5"]),
        // Training data: token datasets (HDF5), sampler; tokenizers and chat packing.
        .target(name: "ESFTData", dependencies: ["ESFTBase", "ESFTHDF5"]),
        // The method: routing statistics, relevance scores, expert selection, expert configs.
        .target(name: "ESFTMethod", dependencies: ["ESFTBase", "ESFTModel", "ESFTData"]),
        // Communicator (MPI or single process), collectives with byte/time counters, CommunicatorExchange. The only
        // module that uses MPI.
        .target(name: "ESFTParallel", dependencies: ["ESFTBase", "CMPI", "CMPIShims"]),
        // Training: expert-parallel loop, ParameterArena + AdamW over trainable tensors only, schedules, metrics, outputs;
        // ModelScorer (distributed scoring).
        .target(name: "ESFTTrain", dependencies: ["ESFTKernels", "ESFTModel", "ESFTStore", "ESFTData", "ESFTMethod", "ESFTParallel"]),
        // Evaluation: greedy generation with the KV cache over eval records (the reference's exact-json intent metric)
        // and held-out loss on chat JSONL; records split round-robin over ranks, results gathered by rank 0.
        .target(name: "ESFTEval", dependencies: ["ESFTKernels", "ESFTModel", "ESFTStore", "ESFTData", "ESFTParallel"]),
        // The command-line tool.
        .executableTarget(name: "esft", dependencies: ["ESFTKernels", "ESFTModel", "ESFTHDF5", "ESFTStore", "ESFTMethod", "ESFTParallel", "ESFTData", "ESFTTrain", "ESFTEval"]),
        // Every hand-written parser as a fuzz target: replays inputs in a normal build, fuzzes under scripts/fuzz.sh.
        .executableTarget(name: "esft-fuzz", dependencies: ["ESFTBase", "ESFTData", "ESFTMethod", "ESFTModel", "ESFTStore"]),

        // Fixture paths and comparisons shared by the test targets.
        .target(name: "ESFTTestSupport", dependencies: ["ESFTKernels", "ESFTModel", "ESFTStore", "ESFTData"],
                path: "Tests/ESFTTestSupport"),
        .testTarget(name: "ESFTBaseTests", dependencies: ["ESFTBase"]),
        .testTarget(name: "ESFTModelTests", dependencies: ["ESFTKernels", "ESFTModel", "ESFTStore", "ESFTTestSupport"]),
        .testTarget(name: "ESFTStoreTests", dependencies: ["ESFTKernels", "ESFTHDF5", "ESFTStore", "ESFTModel", "ESFTTestSupport"]),
        .testTarget(name: "ESFTCLITests", dependencies: ["ESFTKernels", "ESFTModel", "ESFTStore", "ESFTData", "ESFTHDF5", "ESFTTestSupport"]),
        .testTarget(name: "ESFTMethodTests", dependencies: ["ESFTMethod", "ESFTModel", "ESFTKernels", "ESFTStore"]),
        .testTarget(name: "ESFTParallelTests", dependencies: ["ESFTParallel", "ESFTKernels", "ESFTTestSupport"]),
        .testTarget(name: "ESFTDataTests", dependencies: ["ESFTData", "ESFTKernels", "ESFTHDF5", "ESFTTestSupport"]),
        .testTarget(name: "ESFTTrainTests", dependencies: ["ESFTKernels", "ESFTModel", "ESFTHDF5", "ESFTStore", "ESFTTrain", "ESFTTestSupport"]),
        // Real SLURM (one-node slurmctld/slurmd) and multi-host MPI over TCP between network namespaces.
        .testTarget(name: "ESFTClusterTests", dependencies: ["ESFTStore", "ESFTTestSupport"]),
        .testTarget(name: "ESFTEvalTests", dependencies: ["ESFTEval", "ESFTData", "ESFTModel", "ESFTKernels", "ESFTTestSupport"]),
        .testTarget(name: "ESFTScoreTests", dependencies: ["ESFTMethod", "ESFTData", "ESFTKernels", "ESFTModel", "ESFTStore", "ESFTTestSupport"]),
    ],
    swiftLanguageModes: [.v5]
)

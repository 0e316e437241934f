// swift-tools-version:6.0
// ESFT trainer: Expert-Specialized Fine-Tuning of Mixture-of-Experts models on CPU clusters.
// Depends on nothing but the toolchain and three C libraries found through pkg-config:
// OpenMPI (ompi), OpenBLAS (openblas), HDF5 (hdf5). See scripts/setup.sh.
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
        // The macros Swift cannot import (MPI_COMM_WORLD, H5T_NATIVE_FLOAT, ...), one function each.
        .target(name: "CShims", dependencies: ["CMPI", "CHDF5"]),

        // fp32 buffers, OpenBLAS GEMM, elementwise kernels with their backward, threading.
        .target(name: "ESFTKernels", dependencies: ["COpenBLAS"]),
        // DeepSeek-V2 config, parameters, layers as forward/backward pairs, loss.
        .target(name: "ESFTModel", dependencies: ["ESFTKernels"]),
        // Weight files: safetensors (read/write), HDF5 model directories.
        .target(name: "ESFTStore", dependencies: ["ESFTKernels", "ESFTModel", "CHDF5", "CShims"]),
        // Tokenizers (byte-level, Hugging Face tokenizer.json BPE); Foundation only.
        .target(name: "ESFTData", dependencies: []),
        // The command-line tool.
        .executableTarget(name: "esft", dependencies: ["ESFTKernels", "ESFTModel", "ESFTStore"]),

        .testTarget(name: "ESFTModelTests", dependencies: ["ESFTKernels", "ESFTModel", "ESFTStore"]),
        .testTarget(name: "ESFTStoreTests", dependencies: ["ESFTStore", "ESFTModel"]),
        .testTarget(name: "ESFTCLITests", dependencies: []),
        .testTarget(name: "ESFTDataTests", dependencies: ["ESFTData"]),
    ],
    swiftLanguageModes: [.v5]
)

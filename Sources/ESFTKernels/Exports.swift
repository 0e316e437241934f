// ESFTKernels re-exports the project-wide basics, so `import ESFTKernels` keeps giving ESFTError,
// SplitMix64, FNV1a64, the JSON reader, AtomicWrite and RangeSplit.
@_exported import ESFTBase

import ESFTKernels

/// `--recipe`: esft's own choices (the default), or the ESFT reference's (deepseek-ai/ESFT) exactly, on the
/// commands where they differ (docs/esft-method.md lists each difference and why our default is what it is).
enum Recipe: String {
    case esft, reference
    /// `seed` in the reference's configs/base.yaml: `random.seed` before packing, `torch.manual_seed` for the rest.
    static let referenceSeed = 5_934_875
}

extension Arguments {
    mutating func recipe() throws -> Recipe {
        guard let text = try option("--recipe") else { return .esft }
        guard let recipe = Recipe(rawValue: text) else {
            throw ESFTError("\(command): --recipe must be esft or reference, got '\(text)'")
        }
        return recipe
    }
}

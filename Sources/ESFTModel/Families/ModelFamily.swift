import ESFTKernels

/// The architecture family a config.json names (`model_type`), and everything that differs between families
/// outside the engine's math: how a config is read and checked, what the tensors are called on disk, and
/// which config fields a model fingerprint covers. Each family's rules live in one file of this folder
/// (`DeepseekV2.swift`, …); the rest of esft asks the family of a config, never spells a family itself.
public enum ModelFamily: String, CaseIterable, Sendable {
    case deepseekV2 = "deepseek_v2"

    /// The model_type values esft reads, for messages.
    public static var supported: String { allCases.map(\.rawValue).joined(separator: ", ") }

    /// Reads a config.json of this family (every field that changes the math), checking each value.
    func parseConfig(_ f: JSONReader) throws -> ModelConfig {
        switch self {
        case .deepseekV2: return try DeepseekV2Family.parseConfig(f)
        }
    }

    /// The tensor's name in this family's checkpoints (the per-expert layout hub checkpoints use).
    public func tensorName(of id: ParameterID) -> String {
        switch self {
        case .deepseekV2: return DeepseekV2Family.tensorName(of: id)
        }
    }

    /// The identity of a tensor name of this family; nil for a name that is not one of its parameters
    /// (fused 3-D expert tensors, rotary buffers, another family's tensors).
    public func parameterID(named name: String) -> ParameterID? {
        switch self {
        case .deepseekV2: return DeepseekV2Family.parameterID(named: name)
        }
    }

    /// For a routed expert's projection, the fused 3-D tensor that recent transformers versions hold it in
    /// (`…experts.gate_up_proj` [E, 2I, D], gate rows then up, or `…experts.down_proj` [E, D, I]); nil otherwise.
    public func fusedExpertName(of id: ParameterID) -> String? {
        switch self {
        case .deepseekV2: return DeepseekV2Family.fusedExpertName(of: id)
        }
    }

    /// The config fields a model fingerprint covers, in a fixed order, spelled stably.
    public func fingerprintFields(_ c: ModelConfig) -> [(String, String)] {
        switch self {
        case .deepseekV2: return DeepseekV2Family.fingerprintFields(c)
        }
    }
}

/// A decimal index as checkpoints write it: digits only, no sign, no leading zeros ("07" is not layer 7).
func tensorIndex(_ s: Substring) -> Int? {
    guard !s.isEmpty, s.allSatisfy({ $0.isASCII && $0.isNumber }), s == "0" || s.first != "0" else { return nil }
    return Int(s)
}

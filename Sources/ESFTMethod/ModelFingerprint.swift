import ESFTBase
import ESFTModel

/// A fingerprint of a model's architecture: FNV-1a 64 over the config fields that change the math and
/// every parameter's name and shape. Two configs with the same fingerprint route and train alike given
/// the same weights; the weights themselves are not hashed (that would mean reading the whole model),
/// so a fine-tuned copy of a model shares its base model's fingerprint.
public func modelFingerprint(config c: ModelConfig) -> String {
    var h = FNV1a64()
    h.add(canonicalDescription(of: c))
    for spec in c.parameterSpecs() {
        h.add(spec.name + ":" + spec.shape.map(String.init).joined(separator: "x") + ";")
    }
    return h.hexDigest
}

/// Fixed field order and Swift's shortest round-trip number spelling keep this stable across runs.
func canonicalDescription(of c: ModelConfig) -> String {
    c.family.fingerprintFields(c).map { "\($0.0)=\($0.1);" }.joined()
}

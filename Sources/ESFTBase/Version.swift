/// The esft release, recorded in run records and checkpoint manifests.
public enum ESFTVersion {
    public static let string = "0.5.0"
}

import ESFTKernels
import ESFTStore
import Foundation

/// Compares an `esft forward` output with a reference safetensors file holding the same names
/// (logits, loss, grad.<name>): error = max|ours − ref| / max|ref| per tensor.
enum Comparison {
    static let logitsTolerance = 1e-4, gradientTolerance = 1e-3

    /// Prints a report; returns false when any tensor is beyond tolerance or missing.
    static func run(ours oursPath: String, reference refPath: String, expectGradients: Bool) throws -> Bool {
        let ours = try SafetensorsFile(path: oursPath), ref = try SafetensorsFile(path: refPath)
        var names = ["logits", "loss"]
        if expectGradients { names += ref.entries.keys.filter { $0.hasPrefix("grad.") }.sorted() }
        var failures: [String] = [], worstGrad = (0.0, "")
        for name in names {
            guard let r = ref.entries[name] else {
                if name == "logits" || name == "loss" { failures.append("\(refPath) has no '\(name)'") }
                continue
            }
            guard let o = ours.entries[name] else { failures.append("missing \(name)"); continue }
            guard o.shape == r.shape else { failures.append("\(name): shape \(o.shape) vs reference \(r.shape)"); continue }
            let a = read(ours, o), b = read(ref, r)
            var diff = 0.0, scale = 0.0
            for i in 0..<a.count { diff = max(diff, Double(abs(a[i] - b[i]))); scale = max(scale, Double(abs(b[i]))) }
            let err = scale > 0 ? diff / scale : diff
            let tol = name.hasPrefix("grad.") ? gradientTolerance : logitsTolerance
            if name.hasPrefix("grad.") {
                if err > worstGrad.0 { worstGrad = (err, name) }
            } else {
                print(String(format: "  %-8@ max error relative to max |ref|: %.3e (tolerance %.0e)", name, err, tol))
            }
            if !(err <= tol) { failures.append(String(format: "%@: %.3e > %.0e", name, err, tol)) }
        }
        if expectGradients {
            let count = names.count - 2
            print(String(format: "  %d gradients; worst %.3e (%@), tolerance %.0e", count, worstGrad.0, worstGrad.1, gradientTolerance))
        }
        for f in failures { print("  MISMATCH \(f)") }
        print(failures.isEmpty ? "  MATCH: \(oursPath) agrees with \(refPath)" : "  \(failures.count) mismatch(es)")
        return failures.isEmpty
    }

    private static func read(_ file: SafetensorsFile, _ e: SafetensorsFile.Entry) -> [Float] {
        var out = [Float](repeating: 0, count: e.count)
        out.withUnsafeMutableBufferPointer { file.readFloats(e, count: e.count, into: $0.baseAddress!) }
        return out
    }
}

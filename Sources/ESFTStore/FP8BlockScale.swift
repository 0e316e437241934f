import ESFTKernels
import Foundation

/// The values of the two FP8 formats (OCP 8-bit floating point, as torch's float8_e4m3fn and float8_e5m2):
/// one 256-entry table each, built from the bit layout, so decoding is a lookup.
enum FP8 {
    /// E4M3 "fn": bias 7, no infinities, S.1111.111 is NaN (max ±448).
    static let e4m3: [Float] = (0..<256).map { decode(UInt8($0), exponentBits: 4, mantissaBits: 3, finiteOnly: true) }
    /// E5M2: bias 15, IEEE-like (S.11111.00 is ±∞, other all-ones exponents NaN; max ±57344).
    static let e5m2: [Float] = (0..<256).map { decode(UInt8($0), exponentBits: 5, mantissaBits: 2, finiteOnly: false) }

    static func table(_ dtype: TensorDType) -> [Float] { dtype == .f8e5m2 ? e5m2 : e4m3 }

    static func decode(_ code: UInt8, exponentBits eb: Int, mantissaBits mb: Int, finiteOnly: Bool) -> Float {
        let sign: Float = code & 0x80 != 0 ? -1 : 1
        let exponent = Int(code >> mb) & ((1 << eb) - 1), mantissa = Int(code) & ((1 << mb) - 1)
        let bias = (1 << (eb - 1)) - 1, allOnes = (1 << eb) - 1
        if finiteOnly && exponent == allOnes && mantissa == (1 << mb) - 1 { return .nan }
        if !finiteOnly && exponent == allOnes { return mantissa == 0 ? sign * .infinity : .nan }
        if exponent == 0 { return sign * Float(mantissa) * Float(sign: .plus, exponent: 1 - bias - mb, significand: 1) }
        return sign * Float(sign: .plus, exponent: exponent - bias, significand: 1 + Float(mantissa) / Float(1 << mb))
    }
}

/// How a checkpoint's FP8 weights are scaled: `quantization_config` of config.json as DeepSeek-V3, R1,
/// Kimi-K2 and Qwen3's FP8 releases write it (`quant_method: fp8`, `weight_block_size: [rows, cols]`).
/// Each FP8 matrix `X.weight` [R, C] comes with `X.weight_scale_inv` [⌈R/rows⌉, ⌈C/cols⌉] (F32 or BF16), and
/// w[r, c] = fp32(q[r, c]) · scale_inv[r / rows, c / cols], rounded once to the stored dtype: the same
/// products torch's `q.float() * s` gives, so bf16 and fp32 imports are bit for bit a torch dequantization.
public struct FP8Quantization: Equatable, Sendable {
    public let blockRows: Int
    public let blockCols: Int

    /// transformers' FineGrainedFP8Config default when `weight_block_size` is absent.
    static let defaultBlock = (128, 128)

    /// nil when config.json has no quantization_config; an error for any method but fp8.
    public static func read(configAt url: URL) throws -> FP8Quantization? {
        let config = try JSONReader.load(url, what: "model config")
        guard let q = try config.optionalField("quantization_config") else { return nil }
        let method = try q.field("quant_method").string()
        guard method == "fp8" else {
            throw q.fail("quant_method is '\(method)'; esft reads unquantized checkpoints (F32, BF16, F16) and fp8 block-scaled ones (quant_method fp8)")
        }
        guard let size = try q.optionalField("weight_block_size") else {
            return FP8Quantization(blockRows: defaultBlock.0, blockCols: defaultBlock.1)
        }
        let items = try size.items()
        guard items.count == 2 else { throw size.fail("must be [rows, cols], got \(items.count) value(s)") }
        let rows = try items[0].int(), cols = try items[1].int()
        guard rows >= 1, cols >= 1 else { throw size.fail("must hold two positive integers, got [\(rows), \(cols)]") }
        return FP8Quantization(blockRows: rows, blockCols: cols)
    }

    /// The scale tensor's name for an FP8 weight.
    public static func scaleName(of weight: String) -> String { weight + "_scale_inv" }

    /// Shape the scale tensor of a [rows, cols] matrix must have.
    public func scaleShape(rows: Int, cols: Int) -> [Int] {
        [(rows + blockRows - 1) / blockRows, (cols + blockCols - 1) / blockCols]
    }
}

/// An FP8 matrix's scales, checked (shape, dtype, every value finite and > 0) and ready to dequantize.
public struct BlockScale {
    public let quantization: FP8Quantization
    public let rows: Int
    public let cols: Int
    public let scales: [Float]  // [⌈rows/blockRows⌉ × ⌈cols/blockCols⌉], row-major

    /// Checks `weight` (2-D FP8) against its scale tensor in `file`; errors name the tensor and the file.
    public init(weight: SafetensorsFile.Entry, in weightFile: SafetensorsFile, scale: SafetensorsFile.Entry?,
                scaleFile: SafetensorsFile?, quantization: FP8Quantization?) throws {
        let name = weight.name, scaleName = FP8Quantization.scaleName(of: name)
        guard let quantization else {
            throw ESFTError("\(weightFile.path): tensor '\(name)' is \(weight.dtype.rawValue), but config.json has no quantization_config (quant_method fp8, weight_block_size) to say how it is scaled")
        }
        guard weight.shape.count == 2 else {
            throw ESFTError("\(weightFile.path): tensor '\(name)' is \(weight.dtype.rawValue) with shape \(weight.shape); only 2-D FP8 matrices with block scales are supported")
        }
        guard let scale, let scaleFile else {
            throw ESFTError("\(weightFile.path): tensor '\(name)' is \(weight.dtype.rawValue) but its scale tensor '\(scaleName)' is missing from the checkpoint")
        }
        let rows = weight.shape[0], cols = weight.shape[1]
        let want = quantization.scaleShape(rows: rows, cols: cols)
        guard scale.shape == want else {
            throw ESFTError("\(scaleFile.path): tensor '\(scaleName)' has shape \(scale.shape), but a [\(rows), \(cols)] matrix in blocks of [\(quantization.blockRows), \(quantization.blockCols)] (quantization_config.weight_block_size) needs \(want)")
        }
        guard scale.dtype == .f32 || scale.dtype == .bf16 else {
            throw ESFTError("\(scaleFile.path): tensor '\(scaleName)' is \(scale.dtype.rawValue); scales must be F32 or BF16")
        }
        var values = [Float](repeating: 0, count: scale.count)
        values.withUnsafeMutableBufferPointer { scaleFile.readFloats(scale, count: scale.count, into: $0.baseAddress!) }
        if let bad = values.firstIndex(where: { !($0.isFinite && $0 > 0) }) {
            let (br, bc) = (bad / want[1], bad % want[1])
            throw ESFTError("\(scaleFile.path): tensor '\(scaleName)' holds \(values[bad]) at block [\(br), \(bc)]; every scale must be finite and positive")
        }
        self.quantization = quantization; self.rows = rows; self.cols = cols; scales = values
    }

    /// w = fp32(q) · scale of its block, for the whole matrix (row-major) into `dst`.
    public func dequantize(codes: UnsafePointer<UInt8>, dtype: TensorDType, into dst: UnsafeMutablePointer<Float>) {
        let table = FP8.table(dtype), br = quantization.blockRows, bc = quantization.blockCols
        let scaleCols = (cols + bc - 1) / bc, cols = self.cols
        scales.withUnsafeBufferPointer { s in
            table.withUnsafeBufferPointer { t in
                parallelChunks(rows, grain: 16) { range in
                    for r in range {
                        let srow = s.baseAddress! + (r / br) * scaleCols, q = codes + r * cols, out = dst + r * cols
                        for c in 0..<cols { out[c] = t[Int(q[c])] * srow[c / bc] }
                    }
                }
            }
        }
    }
}

import ESFTKernels
import ESFTModel
import ESFTTestSupport
import XCTest

/// The oneDNN backend of the GEMM layer against the OpenBLAS path (fp32) and an fp64 reference (bf16).
/// Every test restores the default (OpenBLAS, fp32), which the parity tests run with.
final class GEMMBackendTests: XCTestCase {
    override func setUpWithError() throws {
        try XCTSkipUnless(OneDNN.isAvailable, "oneDNN's CPU engine is not available here (scripts/setup.sh installs libdnnl-dev)")
    }
    override func tearDown() { GEMMLayer.set(.openblas) }

    /// bf16 products need what oneDNN 2.6 needs for them (AVX-512); elsewhere (Zen 3) the test skips naming it.
    func requireBF16Products() throws {
        if let problem = OneDNN.bf16Problem { throw XCTSkip("no bf16 products on this CPU: \(problem)") }
    }

    /// fp32 unit roundoff.
    let u32 = pow(2.0, -24.0)
    /// bf16 unit roundoff (8 significant bits, round to nearest even): each rounded operand is off by ≤ 2^-8 relative.
    let u16 = pow(2.0, -8.0)

    /// Random matrices with a spread of magnitudes (so cancellation happens, as in a model).
    func random(_ count: Int, _ rng: inout SplitMix64) -> [Float] { (0..<count).map { _ in Float(rng.nextGaussian()) } }

    /// C = op(A)·op(B) (+ beta·C0) in fp64 and Σ|op(A)||op(B)| (+ |beta·C0|), the scale error bounds are stated against.
    func reference(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, a: [Float], b: [Float], beta: Float, c0: [Float])
        -> (value: [Double], absSum: [Double]) {
        var value = [Double](repeating: 0, count: m * n), absSum = value
        for i in 0..<m {
            for j in 0..<n {
                var s = Double(beta) * Double(c0[i * n + j]), t = abs(s)
                for l in 0..<k {
                    let x = Double(transA ? a[l * m + i] : a[i * k + l]), y = Double(transB ? b[j * k + l] : b[l * n + j])
                    s += x * y; t += abs(x * y)
                }
                value[i * n + j] = s; absSum[i * n + j] = t
            }
        }
        return (value, absSum)
    }

    /// Model shapes (configs/small.json and medium.json: hidden 256/1024, expert inner 64/352, dense inner 768,
    /// kv rank 64) with token counts from one row to an expert's batch, every transpose, and beta 0 and 1.
    func testOneDNNSgemmMatchesOpenBLASOnModelShapes() {
        var rng = SplitMix64(seed: 12)
        let shapes = [(1, 256, 64), (37, 64, 256), (16, 352, 1024), (16, 1024, 352), (16, 768, 256), (5, 64, 1024)]
        var checked = 0
        for (m, n, k) in shapes {
            for (transA, transB) in [(false, true), (false, false), (true, false)] {
                for beta: Float in [0, 1] {
                    let a = random(m * k, &rng), b = random(k * n, &rng), c0 = random(m * n, &rng)
                    func run(_ backend: GEMMBackend) -> [Float] {
                        GEMMLayer.set(backend)
                        var c = c0
                        sgemm(transA: transA, transB: transB, m: m, n: n, k: k, a: a, lda: transA ? m : k,
                              b: b, ldb: transB ? k : n, beta: beta, c: &c, ldc: n)
                        return c
                    }
                    let blas = run(.openblas), dnnl = run(.onednn)
                    let ref = reference(transA: transA, transB: transB, m: m, n: n, k: k, a: a, b: b, beta: beta, c0: c0)
                    for i in 0..<(m * n) {
                        // Each fp32 result is within γ_{k+1}·Σ|a||b| of the exact sum whatever the summation order
                        // (k products, k+1 additions with beta), γ_j = j·u/(1 − j·u); two of them differ by at most twice that.
                        let gamma = Double(k + 1) * u32 / (1 - Double(k + 1) * u32)
                        XCTAssertLessThanOrEqual(abs(Double(dnnl[i]) - Double(blas[i])), 2 * gamma * ref.absSum[i],
                                                 "m \(m) n \(n) k \(k) transA \(transA) transB \(transB) beta \(beta) at \(i)")
                    }
                    checked += 1
                }
            }
        }
        XCTAssertEqual(checked, shapes.count * 6)
    }

    /// Linear with a bf16 weight and `--compute bf16`: the activations are rounded to bf16, the product
    /// accumulates in fp32. Against fp64 on the unrounded fp32 inputs, element by element:
    /// |ŷ − y| ≤ (2^-8 (x rounded; the weight is already bf16, exact) + γ_k (1 + 2^-8)) · Σ|x||w|.
    /// Forward (y = x·Wᵀ, W used transposed), backward (dx = dy·W, W used as is), with accumulation.
    func testBF16ProductsAgainstFP64WithinRoundingBound() throws {
        try requireBF16Products()
        var rng = SplitMix64(seed: 13)
        // (3, 1024, 352) reuses the primitive of (37, 1024, 352) with another M: its memory handles are made again.
        for (n, inDim, outDim) in [(1, 256, 64), (37, 1024, 352), (3, 1024, 352), (64, 352, 1024), (9, 256, 768)] {
            let wBits = random(outDim * inDim, &rng).map { UInt16($0.bitPattern >> 16) }  // bf16 by truncation
            let w = wBits.map { Float(bitPattern: UInt32($0) << 16) }                  // its exact fp32 value
            let x = random(n * inDim, &rng), dy = random(n * outDim, &rng), y0 = random(n * outDim, &rng)
            GEMMLayer.set(.onednn, compute: .bf16)
            var y = y0, dx = [Float](repeating: 0, count: n * inDim)
            wBits.withUnsafeBufferPointer { wb in
                Linear.forward(x: x, weight: .bf16(wb.baseAddress!), bias: nil, y: &y, n: n, inDim: inDim, outDim: outDim, accumulate: true)
                Linear.backward(dy: dy, x: x, weight: .bf16(wb.baseAddress!), dx: &dx, dWeight: nil, dBias: nil, n: n, inDim: inDim, outDim: outDim)
            }
            let fwd = reference(transA: false, transB: true, m: n, n: outDim, k: inDim, a: x, b: w, beta: 1, c0: y0)
            let bwd = reference(transA: false, transB: false, m: n, n: inDim, k: outDim, a: dy, b: w, beta: 0, c0: dx.map { _ in 0 })
            var worst = 0.0
            for (got, ref, k) in [(y, fwd, inDim), (dx, bwd, outDim)] {
                let gamma = Double(k + 1) * u32 / (1 - Double(k + 1) * u32)
                for i in got.indices {
                    let bound = (u16 + gamma * (1 + u16)) * ref.absSum[i]
                    let err = abs(Double(got[i]) - ref.value[i])
                    XCTAssertLessThanOrEqual(err, bound, "n \(n) in \(inDim) out \(outDim) at \(i)")
                    worst = max(worst, err / ref.absSum[i])
                }
            }
            // The product really ran in bf16: fp32 alone stays below γ_k ≈ k·6e-8, bf16 rounding of x gives ~2^-9/√k ≳ 1e-5 of Σ|x||w| (random signs).
            XCTAssertGreaterThan(worst, 1e-6, "n \(n) in \(inDim) out \(outDim): error as small as fp32; bf16 path not taken?")
        }
    }

    /// One fixture model's forward and backward with oneDNN and `--compute bf16`, against the fp32 engine
    /// (OpenBLAS). The model's matrices are frozen bf16 (views into the file), so every projection, expert and
    /// the tied head run as bf16 products; the norms are trainable, so their gradients need dx back through
    /// all of them. Tolerance: each bf16 product adds ≤ 2^-8 relative (to Σ|x||w|) error; the longest chain
    /// here is about 6 products per layer (q_a, q_b, kv_a, kv_b, o, then gate/up and down) × 4 layers + the
    /// head ≈ 25, forward and again as many backward, so 25·2^-8 ≈ 0.1 relative-to-max for logits and loss
    /// and 50·2^-8 ≈ 0.2 for gradients. These are first-order bounds (errors add along the chain, normalisations
    /// and softmax do not amplify them at this model's magnitudes); the measured errors are printed.
    func testFixtureForwardBackwardInBF16IsBoundedByFP32Engine() throws {
        try requireBF16Products()
        func run(_ backend: GEMMBackend, _ compute: ComputePrecision) throws -> (loss: Double, logits: [Float], grads: [[Float]]) {
            GEMMLayer.set(backend, compute: compute)
            let f = try ModelFixture("group_bf16_tied")
            let norms = f.parameters.ordered.filter { $0.shape.count == 1 }
            for p in norms { p.makeTrainable() }
            XCTAssert(f.parameters.ordered.filter { $0.shape.count == 2 }.allSatisfy { $0.isBF16 }, "matrices stay bf16")
            let result = try f.model.forward(f.batch, training: true)
            try f.model.backward()
            let v = f.checkpoint.config.vocabSize
            return (result.loss, Array(f.model.logits(count: f.batch.batch * f.batch.seqLen * v)),
                    norms.map { Array(UnsafeBufferPointer(start: $0.gradPointer, count: $0.count)) })
        }
        let fp32 = try run(.openblas, .fp32), bf16 = try run(.onednn, .bf16)
        let products = 6 * 4 + 1
        let logitErr = bf16.logits.withUnsafeBufferPointer { relativeToMax($0, fp32.logits) }
        XCTAssertLessThan(logitErr, Double(products) * u16, "logits")
        XCTAssertEqual(bf16.loss, fp32.loss, accuracy: Double(products) * u16 * abs(fp32.loss), "loss")
        var worst = 0.0
        XCTAssertFalse(fp32.grads.isEmpty)
        for (g16, g32) in zip(bf16.grads, fp32.grads) {
            let err = g16.withUnsafeBufferPointer { relativeToMax($0, g32) }
            XCTAssertLessThan(err, Double(2 * products) * u16, "a norm's gradient")
            worst = max(worst, err)
        }
        XCTAssertGreaterThan(logitErr, 0, "bf16 compute changed nothing: the bf16 path did not run")
        print("bf16 vs fp32 engine: logits rel err \(logitErr), loss \(bf16.loss) vs \(fp32.loss), worst norm-gradient rel err \(worst)")
    }

    /// fp32 compute with oneDNN widens bf16 weights exactly, so it agrees with OpenBLAS to summation order only.
    func testOneDNNFP32ComputeWithBF16WeightsIsFP32() {
        var rng = SplitMix64(seed: 14)
        let n = 8, inDim = 256, outDim = 64
        let wBits = random(outDim * inDim, &rng).map { UInt16($0.bitPattern >> 16) }
        let x = random(n * inDim, &rng)
        func run(_ backend: GEMMBackend) -> [Float] {
            GEMMLayer.set(backend)
            var y = [Float](repeating: 0, count: n * outDim)
            wBits.withUnsafeBufferPointer { Linear.forward(x: x, weight: .bf16($0.baseAddress!), bias: nil, y: &y, n: n, inDim: inDim, outDim: outDim) }
            return y
        }
        let blas = run(.openblas), dnnl = run(.onednn)
        // Both fp32 over k = 256 terms: |Δ| ≤ 2γ_256·Σ|x||w| ≤ 2·256·2^-24·max|y|-ish; relative to max, 1e-5 is loose but
        // still 30× below what bf16 rounding of x would give (~2^-9).
        XCTAssertLessThan(dnnl.withUnsafeBufferPointer { relativeToMax($0, blas) }, 1e-5)
    }

    func testConfigureRejectsBadChoices() {
        XCTAssertThrowsError(try GEMMLayer.configure(gemm: "mkl", compute: "fp32")) { XCTAssert("\($0)".contains("--gemm")) }
        XCTAssertThrowsError(try GEMMLayer.configure(gemm: "onednn", compute: "fp16")) { XCTAssert("\($0)".contains("--compute")) }
        XCTAssertThrowsError(try GEMMLayer.configure(gemm: "openblas", compute: "bf16")) { XCTAssert("\($0)".contains("needs the oneDNN")) }
        XCTAssertEqual(GEMMLayer.autoChoice(isa: "avx512_core_bf16", compute: .fp32).0, .openblas, "Zen 4: OpenBLAS was faster in fp32")
        XCTAssertEqual(GEMMLayer.autoChoice(isa: "avx512_core_bf16", compute: .bf16).0, .onednn)
        XCTAssertEqual(GEMMLayer.autoChoice(isa: "avx512_core_amx", compute: .fp32).0, .onednn)
        XCTAssertEqual(GEMMLayer.autoChoice(isa: "avx2", compute: .fp32).0, .openblas)
        XCTAssertEqual(GEMMLayer.autoChoice(isa: nil, compute: .bf16).0, .openblas)
        XCTAssertEqual(GEMMLayer.backend, .openblas, "a rejected choice changes nothing")
        // bf16 on oneDNN: accepted exactly where the probe created bf16 primitives, else refused with the reason.
        if let problem = OneDNN.bf16Problem {
            for gemm in ["onednn", "auto"] {
                XCTAssertThrowsError(try GEMMLayer.configure(gemm: gemm, compute: "bf16")) {
                    XCTAssert("\($0)".contains("--compute bf16 cannot run here: \(problem); use --compute fp32"), "\($0)")
                }
            }
            XCTAssertEqual(GEMMLayer.backend, .openblas, "a refused choice changes nothing")
        } else {
            XCTAssertNoThrow(try GEMMLayer.configure(gemm: "auto", compute: "bf16"))
            XCTAssertEqual(GEMMLayer.record.backend, "onednn")
            XCTAssertEqual(GEMMLayer.record.compute, "bf16")
        }
    }

    /// The refusal names what is missing: the AVX-512 flags a Zen 3 lacks, or the variable that capped oneDNN.
    func testBF16RefusalNamesTheMissingFeature() {
        let zen3 = "fpu sse2 ssse3 sse4_1 sse4_2 avx avx2 fma f16c bmi2"
        var text = OneDNN.bf16Refusal(status: 3, environment: [CPUFeatures.pretendVariable: zen3])
        XCTAssert(text.contains("this CPU lacks avx512f, avx512bw, avx512vl, avx512dq"), text)
        text = OneDNN.bf16Refusal(status: 3, environment: [CPUFeatures.pretendVariable: zen3 + " avx512f avx512bw avx512vl avx512dq",
                                                           "DNNL_MAX_CPU_ISA": "AVX2"])
        XCTAssert(text.hasPrefix("DNNL_MAX_CPU_ISA=AVX2 limits oneDNN to"), text)
        text = OneDNN.bf16Refusal(status: 3, environment: [CPUFeatures.pretendVariable: zen3 + " avx512f avx512bw avx512vl avx512dq"])
        XCTAssert(text.contains("status 3"), text)
    }
}

import ESFTKernels
import ESFTModel
import ESFTTrain
import XCTest

/// The flat trainable state: parameters bound to views of one arena per kind, owned region first.
final class ParameterArenaTests: XCTestCase {
    private func parameter(_ id: ParameterID, _ shape: [Int], values: (Int) -> Float) -> Parameter {
        let p = Parameter(ParameterSpec(id, shape, family: .deepseekV2))
        for i in 0..<p.count { p.value[i] = values(i) }
        return p
    }

    func testBindingLaysOutOwnedThenReplicatedAndKeepsValues() {
        let expert = parameter(.routedExpert(.up, layer: 1, expert: 3), [4, 3]) { Float($0) + 1 }
        let norm = parameter(.inputNorm(layer: 1), [3]) { Float($0) * -0.5 }
        let head = parameter(.lmHead, [2, 3]) { Float($0) * 0.25 }
        let arena = ParameterArena(owned: [expert], replicated: [norm, head])
        XCTAssertEqual(arena.count, 12 + 3 + 6)
        XCTAssertEqual(arena.ownedCount, 12)
        XCTAssertEqual(arena.replicatedCount, 9)
        XCTAssertEqual(arena.views.map(\.offset), [0, 12, 15])
        XCTAssertEqual(arena.views.map(\.id), [expert.id, norm.id, head.id])
        // Values moved into the arena unchanged; the parameters now read and write the arena.
        XCTAssertEqual(Array(arena.weights.buffer), (0..<12).map { Float($0) + 1 } + (0..<3).map { Float($0) * -0.5 } + (0..<6).map { Float($0) * 0.25 })
        XCTAssertEqual(head.value, arena.weights.pointer + 15)
        XCTAssertEqual(head.gradPointer, arena.gradients.pointer + 15)
        XCTAssertTrue(expert.isTrainable && norm.isTrainable && head.isTrainable)
        XCTAssertEqual(arena.replicatedGradients, arena.gradients.pointer + 12)
        XCTAssertTrue(arena.gradients.buffer.allSatisfy { $0 == 0 })
    }

    func testBindingWidensBF16Views() {
        // 1.5 and -2 are exact in bf16: 0x3FC0, 0xC000.
        let bits: [UInt16] = [0x3FC0, 0xC000, 0x3FC0, 0xC000]
        bits.withUnsafeBufferPointer { b in
            let p = Parameter(ParameterSpec(.router(layer: 0), [2, 2], family: .deepseekV2), weight: .bf16(b.baseAddress!), owner: self)
            let arena = ParameterArena(owned: [], replicated: [p])
            XCTAssertEqual(Array(arena.weights.buffer), [1.5, -2, 1.5, -2])
            XCTAssertFalse(p.isBF16)
        }
    }

    func testNormAndClipOverTheArena() {
        let a = parameter(.routedExpert(.down, layer: 0, expert: 0), [2, 2]) { _ in 0 }
        let b = parameter(.finalNorm, [3]) { _ in 0 }
        let arena = ParameterArena(owned: [a], replicated: [b])
        let grads: [Float] = [3, -4, 0.5, 1, 2, -2, 1]
        for (i, g) in grads.enumerated() { arena.gradients.pointer[i] = g }
        // Small integers and halves: every square and partial sum is exact in Double.
        XCTAssertEqual(arena.gradientSumOfSquares(arena.ownedViews), 9 + 16 + 0.25 + 1)
        XCTAssertEqual(arena.gradientSumOfSquares(arena.replicatedViews), 4 + 4 + 1)
        arena.scaleGradients(by: 0.5)  // a power of two: exact
        XCTAssertEqual(Array(arena.gradients.buffer), grads.map { $0 * 0.5 })
        XCTAssertEqual(Array(UnsafeBufferPointer(start: b.gradPointer, count: 3)), [1, -1, 0.5])
        arena.zeroGradients()
        XCTAssertTrue(arena.gradients.buffer.allSatisfy { $0 == 0 })
    }

    /// AdamW's first step from zero moments is w ← w·(1 − lr·wd) − lr·g/(|g| + ε) (bias corrections make
    /// m̂ = g, v̂ = g²); matrices decay, vectors do not.
    func testFirstAdamWStepOverTheArena() {
        let w = parameter(.attention(.oProj, layer: 0), [2, 2]) { Float($0) - 1.5 }
        let n = parameter(.inputNorm(layer: 0), [2]) { Float($0) + 1 }
        let arena = ParameterArena(owned: [], replicated: [w, n])
        let g: [Float] = [0.3, -2, 1e-3, 5, -0.7, 0.01]
        for (i, x) in g.enumerated() { arena.gradients.pointer[i] = x }
        var hyper = AdamW.Hyperparameters(); hyper.weightDecay = 0.1
        let opt = AdamW(arena, hyper: hyper)
        let lr = 0.01
        let before = Array(arena.weights.buffer)
        opt.update(lr: lr)
        for i in 0..<6 {
            let decay = i < 4 ? 1 - lr * hyper.weightDecay : 1
            let expected = Double(before[i]) * decay - lr * Double(g[i]) / (abs(Double(g[i])) + hyper.eps)
            // ~8 fp32 roundings (decay, two moments, sqrt, bias terms, divide, subtract), each ≤ 2⁻²⁴ relative
            // of |w| or of lr: 1e-6·(|w| + lr) bounds them with room.
            XCTAssertEqual(Double(arena.weights.pointer[i]), expected, accuracy: 1e-6 * (abs(Double(before[i])) + lr), "element \(i)")
        }
        XCTAssertEqual(opt.stateBytes, 6 * 8)
    }
}

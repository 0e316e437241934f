import ESFTBase
import XCTest

final class SplitMix64Tests: XCTestCase {
    func testMatchesTheReferenceSequence() {
        // Vigna's splitmix64.c with x = 0: the first three outputs.
        var g = SplitMix64(seed: 0)
        XCTAssertEqual(g.next(), 0xE220_A839_7B1D_CDAF)
        XCTAssertEqual(g.next(), 0x6E78_9E6A_A1B9_65F4)
        XCTAssertEqual(g.next(), 0x06C4_5D18_8009_454F)
    }

    func testSameSeedSameNumbersOtherSeedOthers() {
        var a = SplitMix64(seed: 5934875), b = SplitMix64(seed: 5934875), c = SplitMix64(seed: 5934876)
        let xs = (0..<100).map { _ in a.next() }
        XCTAssertEqual(xs, (0..<100).map { _ in b.next() })
        XCTAssertNotEqual(xs, (0..<100).map { _ in c.next() })
        XCTAssertEqual(a.state, b.state, "the state is all there is to save")
    }

    func testStreamsAreReproducibleAndDistinct() {
        var s1 = SplitMix64.stream(seed: 7, index: 3), s2 = SplitMix64.stream(seed: 7, index: 3)
        var other = SplitMix64.stream(seed: 7, index: 4)
        let a = (0..<10).map { _ in s1.next() }
        XCTAssertEqual(a, (0..<10).map { _ in s2.next() })
        XCTAssertNotEqual(a, (0..<10).map { _ in other.next() })
    }

    func testUnitAndGaussianAreInRangeAndDeterministic() {
        var g = SplitMix64(seed: 11), h = SplitMix64(seed: 11)
        var sum = 0.0, sumSquares = 0.0
        for _ in 0..<20_000 {
            let u = g.nextUnit()
            XCTAssert(u >= 0 && u < 1)
            XCTAssertEqual(u, h.nextUnit())
        }
        for _ in 0..<20_000 {
            let x = g.nextGaussian()
            XCTAssertEqual(x, h.nextGaussian())
            sum += x; sumSquares += x * x
        }
        XCTAssertEqual(sum / 20_000, 0, accuracy: 0.05)
        XCTAssertEqual(sumSquares / 20_000, 1, accuracy: 0.05)
    }
}

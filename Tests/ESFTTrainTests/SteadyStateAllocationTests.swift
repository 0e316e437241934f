import ESFTKernels
import ESFTModel
import ESFTTestSupport
import ESFTTrain
import XCTest

/// After the first step, training steps of the same shapes allocate no engine buffer: activations, scratch,
/// the head's chunks, dispatch plans and gradients all live in grow-only buffers sized by the first step, and
/// the trainable state in the arena made once. Counted with `BufferAllocations` (every FloatBuffer, every
/// Reusable growth), not timed. lr 0 keeps the weights, hence the routing and every expert's row count, the
/// same from step to step, so "the same shapes" holds exactly; a step whose routing sends an expert more rows
/// than ever before may grow that expert's buffers once (grow-only by design). Swift arrays of ids and
/// targets made per batch are not engine buffers and are not counted.
final class SteadyStateAllocationTests: XCTestCase {
    func testTrainingStepsAllocateNoBuffersAfterTheFirst() throws {
        let names = try Fixtures.modelNames()
        XCTAssertFalse(names.isEmpty, "model fixtures are committed")
        for name in names {
            let f = try ModelFixture(name)
            let arena = ParameterArena(owned: [], replicated: f.parameters.ordered)
            let adam = AdamW(arena, hyper: .init())
            func step(_ batch: TokenBatch) throws {
                arena.zeroGradients()
                _ = try f.model.forward(batch, training: true)
                try f.model.backward()
                adam.update(lr: 0)
            }
            try step(f.batch)
            let before = BufferAllocations.count
            for _ in 0..<3 { try step(f.batch) }
            XCTAssertEqual(BufferAllocations.count - before, 0, "\(name): steps 2–4 allocated engine buffers")
            // The counter does count: a batch of twice the rows must grow the activations.
            let twice = TokenBatch(batch: 2 * f.batch.batch, seqLen: f.batch.seqLen, inputIds: f.batch.inputIds + f.batch.inputIds,
                                   labels: f.batch.labels + f.batch.labels)
            try step(twice)
            XCTAssertGreaterThan(BufferAllocations.count - before, 0, "\(name): a larger batch grows buffers")
        }
    }
}

import ESFTKernels
import ESFTModel
import ESFTStore
import ESFTTestSupport
import Foundation
import XCTest

/// Our files read by the tools users have: h5py for model directories (bf16 stored as uint16 bit patterns),
/// the safetensors library for exports. Skipped with a message when python3 lacks numpy/h5py/safetensors
/// (scripts/test.sh installs them from PyPI).
final class PythonReadersTests: XCTestCase {
    func testH5pyAndSafetensorsReadOurFiles() throws {
        let python = URL(fileURLWithPath: "/usr/bin/env")
        let probe = try Executables.run(python, ["python3", "-c", "import numpy, h5py, safetensors"])
        guard probe.status == 0 else { throw XCTSkip("python3 with numpy, h5py and safetensors is not available: \(probe.stderr.suffix(200))") }
        let dir = try Fixtures.tempDirectory("py")
        defer { try? FileManager.default.removeItem(at: dir) }
        let fixture = Fixtures.models.appendingPathComponent("group_bf16_tied")
        let model = dir.appendingPathComponent("model"), hf = dir.appendingPathComponent("hf")
        try ModelImport.run(from: fixture, to: model, dtype: nil, expertShards: 2)
        try ModelExport.safetensors(model: try ModelDirectory(url: model), trained: nil, to: hf, dtype: .fp32, maxShardBytes: 1 << 30)
        // The script compares every tensor three ways: the original checkpoint, our HDF5 (bf16 bits widened
        // with numpy), and our fp32 safetensors export.
        let script = """
        import glob, json, sys, numpy as np, h5py
        from safetensors.numpy import load_file
        src, model, hf = sys.argv[1:4]
        def read_raw(path):  # numpy has no bfloat16: read the BF16 checkpoint's bits directly
            raw = open(path, "rb").read(); n = int.from_bytes(raw[:8], "little"); header = json.loads(raw[8:8 + n])
            out = {}
            for k, e in header.items():
                if k == "__metadata__": continue
                b, end = e["data_offsets"]; data = raw[8 + n + b: 8 + n + end]
                a = np.frombuffer(data, np.uint16 if e["dtype"] == "BF16" else np.float32).reshape(e["shape"])
                out[k] = (a.astype(np.uint32) << 16).view(np.float32) if e["dtype"] == "BF16" else a
            return out
        original = {}
        for f in glob.glob(src + "/model*.safetensors"): original.update(read_raw(f))
        ours = {}
        for f in glob.glob(model + "/*.h5"):
            with h5py.File(f, "r") as h:
                assert h.attrs["esft_format"] in (b"esft-model", "esft-model"), h.attrs["esft_format"]
                for k, d in h.items():
                    a = d[()]
                    if a.dtype == np.uint16: a = (a.astype(np.uint32) << 16).view(np.float32)
                    ours[k] = a
        exported = {}
        for f in glob.glob(hf + "/*.safetensors"): exported.update(load_file(f))
        index = json.load(open(hf + "/model.safetensors.index.json"))
        assert set(index["weight_map"]) == set(exported), "index lists every tensor"
        assert set(ours) == set(original) == set(exported), (len(ours), len(original), len(exported))
        for k, ref in original.items():
            assert np.array_equal(ours[k], ref), k
            assert np.array_equal(exported[k], ref), k
        print("ok", len(ours))
        """
        let r = try Executables.run(python, ["python3", "-c", script, fixture.path, model.path, hf.path])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssert(r.stdout.hasPrefix("ok 106"), r.stdout + r.stderr)
    }
}

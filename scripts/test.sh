#!/usr/bin/env bash
# Everything the tests need, then the tests: Debian packages and a release build (scripts/setup.sh),
# then the XCTest suite and a few seconds of fuzzing per parser. Ends with a one-line summary over all suites: "N passed, N failed, N skipped"
# (scripts/test_summary.sh); exits non-zero when a test failed or the test process died.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v swift >/dev/null 2>&1 || export PATH="/opt/swift/usr/bin:$PATH"
scripts/setup.sh
# Light Python readers for the tests that check our files with h5py and safetensors, and matplotlib for
# the pictures of esft profile (no torch).
if command -v python3 >/dev/null 2>&1; then
    python3 -m pip install --quiet --disable-pip-version-check numpy h5py safetensors matplotlib tokenizers 2>/dev/null \
        || echo "test: could not install numpy/h5py/safetensors/matplotlib/tokenizers; the Python-reader, profile-picture and reference-packing tests will be skipped"
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
swift test --disable-swift-testing 2>&1 | tee "$log" || status=$?
# A few seconds of fuzzing per parser (libFuzzer + ASan; a finding in esft's code fails the run; the long runs
# are in docs/testing.md, "Fuzzing").
fuzz=0
scripts/fuzz.sh "${ESFT_CI_FUZZ_SECONDS:-3}" || fuzz=$?
# Counted over every suite; a crashed test process is a failure naming the test that was running.
scripts/test_summary.sh "$log" "$status"
if [ "$fuzz" -ne 0 ]; then echo "test: fuzzing found a crash in esft (scripts/fuzz.sh above)"; exit 1; fi

#!/usr/bin/env bash
# Everything the tests need, then the tests: Debian packages and a release build (scripts/setup.sh),
# then the XCTest suite. Ends with a one-line summary: "N passed, N failed".
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
executed=$(grep -E "^\s+Executed [0-9]+ tests?" "$log" | tail -1 || true)
total=$(echo "$executed" | sed -nE 's/.*Executed ([0-9]+) tests?.*/\1/p')
failed=$(echo "$executed" | sed -nE 's/.* ([0-9]+) failures?.*/\1/p')
skipped=$(echo "$executed" | sed -nE 's/.* ([0-9]+) tests? skipped.*/\1/p')
skipped=${skipped:-0}
if [ -n "$total" ]; then
    echo "$((total - failed - skipped)) passed, ${failed} failed, ${skipped} skipped"
fi
exit "$status"

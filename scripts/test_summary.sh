#!/usr/bin/env bash
# The closing line of scripts/test.sh, from the XCTest log of `swift test` and its exit status:
#   test_summary.sh LOG STATUS
# Counts every test case over all suites ("Test Case 'S.t' passed|failed|skipped"), and prints
# "N passed, N failed, N skipped". A test process that dies (a signal, a trap) leaves a test that started
# and never finished: that test is named and counted as failed. A non-zero STATUS with no failed test
# (the build failed, or the process died between tests) counts as one failure. Exits 1 when anything
# failed, else 0.
set -euo pipefail
log=$1 status=$2
read -r passed failed skipped running < <(awk '
    /^Test Case .* started/ { split($0, q, "\047"); running = q[2]; next }
    /^Test Case .* passed/  { passed++;  running = ""; next }
    /^Test Case .* failed/  { failed++;  running = ""; next }
    /^Test Case .* skipped/ { skipped++; running = ""; next }
    END { printf "%d %d %d %s\n", passed, failed, skipped, (running == "" ? "-" : running) }
' "$log")
if [ "$running" != "-" ]; then
    echo "test: the test process died (exit status $status) while $running was running; the tests after it did not run"
    failed=$((failed + 1))
elif [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then
    echo "test: swift test exited with status $status without a failed test (a build error, or a crash outside any test)"
    failed=1
fi
echo "${passed} passed, ${failed} failed, ${skipped} skipped"
[ "$failed" -eq 0 ]

#!/usr/bin/env bash
# Everything the tests need, then the tests: Debian packages (scripts/setup.sh), then `swift test`.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v swift >/dev/null 2>&1 || export PATH="/opt/swift/usr/bin:$PATH"
scripts/setup.sh
swift test

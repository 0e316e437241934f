#!/usr/bin/env bash
# Fuzzes every hand-written parser of esft (Sources/esft-fuzz: JSON, safetensors, tokenizer.json, model config,
# expert config, scores, checkpoint manifest, routing logs, token datasets and model directories through HDF5)
# with libFuzzer and AddressSanitizer.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     default: 10 s for each target
#   FUZZ_JOBS=2 scripts/fuzz.sh 600            two targets at a time (one per core)
#
# Builds .build/fuzz (swift build -Xswiftc -sanitize=fuzzer,address -DESFT_FUZZ, linked with lld: gold fails on
# the sanitizer runtime's debug info), then runs each target for SECONDS starting from Tests/Fuzz/TARGET (the
# seeds and every input that once crashed; new inputs found go to .build/fuzz/corpus/TARGET, not the repository)
# and prints one line per target: executions, executions per second, corpus size, peak RSS, findings. A finding
# (crash, ASan report, a 10 s timeout or 2 GB of memory) is saved in .build/fuzz/crashes/TARGET/ and classified
# by where it crashed: in esft's code (the script exits 1; add the input to Tests/Fuzz/TARGET/ with its fix, so
# FuzzCorpusTests replays it from then on) or inside libhdf5 (counted and named, docs/testing.md "Fuzzing").
set -euo pipefail
cd "$(dirname "$0")/.."
command -v swift >/dev/null 2>&1 || export PATH="/opt/swift/usr/bin:$PATH"
seconds=${1:-10}; shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=($(ls Tests/Fuzz))
swift build --product esft-fuzz --build-path .build/fuzz -Xswiftc -sanitize=fuzzer,address -Xswiftc -DESFT_FUZZ \
    -Xswiftc -use-ld=lld 2>&1 | grep -v "Cannot export local symbol" | grep -E "error|Compiling esft|Build complete" || true
fuzz=.build/fuzz/debug/esft-fuzz
[ -x "$fuzz" ] || { echo "fuzz: the build failed" >&2; exit 2; }
export ASAN_OPTIONS=detect_leaks=0   # Foundation's caches look like leaks at exit; memory growth is bounded by -rss_limit_mb
export SWIFT_BACKTRACE=enable=no     # let libFuzzer see a Swift trap as a deadly signal (the backtracer trips ASan)

# Where a finding crashed: "libhdf5 <function>" when the first frame below the sanitizer runtime is inside
# libhdf5 (its 1.10 metadata parser has known memory-safety bugs on corrupted files: reported, not ours to fix),
# else "esft <frame>".
classify() {   # classify TARGET ARTIFACT
    # A memory or time limit hit in a long -fork job may be the job's growth, not this input's: replay it alone.
    case $(basename "$2") in oom-*|timeout-*)
        if timeout 60 "$fuzz" "$1" -rss_limit_mb=2048 -timeout=10 "$2" >/dev/null 2>&1; then
            echo "alone-ok $(basename "$2" | cut -d- -f1)"; return
        fi ;;
    esac
    local log; log=$("$fuzz" "$1" "$2" 2>&1 || true)
    local frame; frame=$(echo "$log" | grep -E '^ *#[0-9]+ 0x' | grep -vE 'compiler-rt|libclang_rt|asan|sanitizer|memcpy|memmove|memset|libc\.so' | head -1)
    if echo "$frame" | grep -q libhdf5; then
        echo "libhdf5 $(echo "$frame" | sed -nE 's/.* in ([A-Za-z0-9_]+) .*/\1/p')"
    else
        echo "esft $(echo "$frame" | sed -E 's/^ *#[0-9]+ 0x[0-9a-f]+ in //; s/ \(.*//' | cut -c1-100)"
    fi
}

run_one() {
    local t=$1 corpus=.build/fuzz/corpus/$1 crashes=.build/fuzz/crashes/$1 log=.build/fuzz/log/$1.log
    mkdir -p "$corpus" "$crashes" .build/fuzz/log
    cp -n Tests/Fuzz/"$t"/* "$corpus"/ 2>/dev/null || true
    local max=$(( $(ls -l Tests/Fuzz/"$t" | awk 'NR > 1 { if ($5 > m) m = $5 } END { print m + 0 }') + 4096 ))
    # -fork: a finding is saved and fuzzing goes on (a libhdf5 crash does not end a 10-minute run).
    "$fuzz" "$t" -fork=1 -ignore_crashes=1 -ignore_ooms=1 -ignore_timeouts=1 -max_total_time="$seconds" -timeout=10 \
        -rss_limit_mb=2048 -max_len="$max" -artifact_prefix="$crashes/" "$corpus" >"$log" 2>&1 || true
    local last; last=$(grep -E '^#[0-9]+:' "$log" | tail -1)
    local execs; execs=$(echo "$last" | sed -nE 's/^#([0-9]+):.*/\1/p')
    local ours=0 theirs=0 alone=0 where=""
    for a in "$crashes"/*; do
        [ -e "$a" ] || continue
        local c; c=$(classify "$t" "$a")
        case $c in libhdf5*) theirs=$((theirs + 1));; alone-ok*) alone=$((alone + 1)); continue;; *) ours=$((ours + 1));; esac
        where="$where$c"$'\n'
    done
    printf 'fuzz %-16s %5ss %9s runs  %6s/s  corpus %5s  findings: %s in esft, %s in libhdf5, %s limits not reproducible alone%s\n' \
        "$t" "$seconds" "${execs:-?}" "$(( ${execs:-0} / (seconds > 0 ? seconds : 1) ))" "$(ls "$corpus" | wc -l)" "$ours" "$theirs" "$alone" \
        "$( [ -z "$where" ] || echo " ($(echo "$where" | grep -v '^$' | sort | uniq -c | sort -rn | awk '{ $1 = $1 "x"; print }' | paste -sd ';' -))")"
    [ "$ours" -eq 0 ]
}

status=0
jobs=${FUZZ_JOBS:-1}
if [ "$jobs" -le 1 ]; then
    for t in "${targets[@]}"; do run_one "$t" || status=1; done
else
    export -f run_one classify; export seconds fuzz
    printf '%s\n' "${targets[@]}" | xargs -P "$jobs" -I{} bash -c 'run_one {}' || status=1
fi
exit $status

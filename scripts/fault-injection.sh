#!/usr/bin/env bash
# Fault injection: kill -9 one rank of `esft train` at a random moment (also in the middle of a checkpoint
# write), resume with --resume auto until the run finishes, and check that every final
# trained.safetensors is byte-identical to the uninterrupted run's on the same rank count.
#
#   scripts/fault-injection.sh [KILLS]      (default 20; ranks drawn from 1–3)
#
# A trial whose kill comes after the run has ended is reported and not counted: the script goes on until
# KILLS kills have landed in running jobs (at most 3 × KILLS trials).
#
# Environment: ESFT (default .build/release/esft), SEED (default 1: the same kill points every time),
# WORK (default a temporary directory, removed at the end), STEPS (default 30).
# Ends with a line "identical: N/N" and exits non-zero when any trial differs or hangs.
set -euo pipefail
cd "$(dirname "$0")/.."
trials=${1:-20}
esft=$(realpath "${ESFT:-.build/release/esft}")
steps=${STEPS:-30}
seed=${SEED:-1}
RANDOM=$seed
if [ "$(id -u)" -eq 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
work=${WORK:-$(mktemp -d)}
[ -n "${WORK:-}" ] || trap 'rm -rf "$work"' EXIT
mkdir -p "$work"

"$esft" init configs/tiny.json "$work/model" --seed 7 --expert-shards 3 >/dev/null
for i in $(seq 1 300); do a=$((i * 37 % 97)); b=$((i * 53 % 89))
    printf '{"messages": [{"role": "user", "content": "Add %s and %s."}, {"role": "assistant", "content": "%s"}]}\n' "$a" "$b" "$((a + b))"
done > "$work/task.jsonl"
"$esft" data prepare --tokenizer bytes --input "$work/task.jsonl" --seq-len 48 --out "$work/data.h5" --seed 2 >/dev/null
echo '{"experts": {"1": [0, 5, 13], "2": [7, 15]}, "shared_experts": true, "non_expert_modules": false}' > "$work/experts.json"
args=(train --model "$work/model" --data "$work/data.h5" --experts "$work/experts.json" --steps "$steps" --batch-rows 6
      --lr 1e-4 --eval-every 5 --threads 1 --checkpoint-every 1 --keep 2)

launch() {  # ranks out [extra...]: starts the job in the background, sets $job
    local ranks=$1 out=$2; shift 2
    if [ "$ranks" -eq 1 ]; then "$esft" "${args[@]}" --out "$out" "$@" >>"$out.log" 2>&1 &
    else mpirun -n "$ranks" --oversubscribe "$esft" "${args[@]}" --out "$out" "$@" >>"$out.log" 2>&1 &
    fi
    job=$!
}

# Whether a kill interrupted a checkpoint: a folder without its manifest, or a writer's temporary file.
interrupted_checkpoint() {
    local d
    for d in "$1"/checkpoints/step-*; do
        [ -d "$d" ] || continue
        [ -f "$d/manifest.json" ] || return 0
        compgen -G "$d/.*.tmp-*" >/dev/null && return 0
    done
    return 1
}

declare -A base_seconds
for r in 1 2 3; do
    start=$(date +%s.%N)
    launch "$r" "$work/base-$r"; wait "$job" 2>/dev/null
    base_seconds[$r]=$(echo "$(date +%s.%N) - $start" | bc)
done

identical=0; in_checkpoint=0; before_first=0; late=0; slowest_down=0; landed=0; t=0
while [ "$landed" -lt "$trials" ] && [ "$t" -lt $((3 * trials)) ]; do
    t=$((t + 1))
    ranks=$((1 + RANDOM % 3)); out="$work/trial-$t"
    # A kill moment uniform over most of the uninterrupted run's duration (start-up included).
    delay=$(echo "scale=3; 0.8 * ${base_seconds[$ranks]} * $RANDOM / 32768" | bc)
    launch "$ranks" "$out"
    sleep "$delay"
    if [ "$ranks" -eq 1 ]; then victims=$job; else victims=$(pgrep -P "$job" -x esft || true); fi
    victim=$(echo "$victims" | tr ' ' '\n' | sed '/^$/d' | shuf -n 1 --random-source=<(yes "$RANDOM") || true)
    killed_at=$(date +%s.%N); where="after the end"
    if [ -n "$victim" ] && kill -9 "$victim" 2>/dev/null; then
        where="training"
        if interrupted_checkpoint "$out"; then where="checkpoint write"; fi
        [ -d "$out/checkpoints" ] || where="before the first checkpoint"
    fi
    if ! timeout 60 bash -c "while kill -0 $job 2>/dev/null; do sleep 0.05; done"; then
        echo "trial $t: the job did not come down within 60 s of the kill"; kill -9 "$job" 2>/dev/null || true
    fi
    wait "$job" 2>/dev/null || true
    down=$(echo "$(date +%s.%N) - $killed_at" | bc)
    if [ "$(echo "$down > $slowest_down" | bc)" -eq 1 ] && [ "$where" != "after the end" ]; then slowest_down=$down; fi
    case $where in "checkpoint write") in_checkpoint=$((in_checkpoint + 1));; "before the first checkpoint") before_first=$((before_first + 1));; "after the end") late=$((late + 1));; esac
    [ "$where" = "after the end" ] || landed=$((landed + 1))
    # Resume until the run completes (no more kills).
    for attempt in 1 2 3; do
        [ -f "$out/summary.json" ] && break
        launch "$ranks" "$out" --resume auto; wait "$job" 2>/dev/null || true
    done
    if cmp -s "$out/trained.safetensors" "$work/base-$ranks/trained.safetensors"; then
        [ "$where" = "after the end" ] || identical=$((identical + 1)); verdict=identical
    else verdict="DIFFERENT (see $out.log)"; fi
    printf 'trial %2d: %d rank(s), kill at %5.2fs (%s), job down in %.2fs: %s\n' "$t" "$ranks" "$delay" "$where" "$down" "$verdict"
done
echo "kills: $landed landed in $t trials ($in_checkpoint during a checkpoint write, $before_first before the first checkpoint; $late trials had ended before their kill)"
echo "slowest job teardown after a kill: ${slowest_down}s"
echo "seed $seed, $steps steps, checkpoint every step, ESFT with shared experts on a tiny model"
echo "identical: $identical/$landed"
[ "$landed" -gt 0 ] && [ "$identical" -eq "$landed" ]

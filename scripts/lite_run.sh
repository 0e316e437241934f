#!/usr/bin/env bash
# A DeepSeek-V2-Lite-sized ESFT run on one node (issue 12; developer-run, not in CI; hours, ~31 GB disk),
# or another real-shape config's (issue 26: OLMoE-1B-7B, ~14 GB).
#
#   scripts/lite_run.sh [WORK_DIR] [STEPS] [CONFIG] [EXPERTS]
#       (default /work/lite, 2 steps, configs/deepseek-v2-lite.json, the reference's intent expert config)
#   scripts/lite_run.sh /work/olmoe 2 configs/olmoe-1b-7b.json spread   # 4 of 64 experts per layer (6.3%)
#
# 1. esft init configs/deepseek-v2-lite.json: 15.7 B random parameters stored bf16 (~31 GB, ~11 min on 2 cores).
# 2. A token dataset of rows of 4096 tokens (the reference's intent training data, byte tokens; the
#    model is random, so only shapes and routing matter).
# 3. esft plan for each job (the predicted memory), then esft train with the ESFT reference's intent
#    selection (../shared/esft-reference/routing/intent/expert_config.json: 124 experts, 1.07 B trainable
#    parameters) on 1 rank × 2 threads and 2 ranks × 1 thread, one row of 4096 tokens per step,
#    --recompute; and esft score on 1 rank (one sample's row). scripts/memory_watch.py samples each job's
#    memory and disk reads.
# Results land in WORK_DIR/results/*.json; docs/performance.md ("DeepSeek-V2-Lite on one node") quotes them.
set -euo pipefail
cd "$(dirname "$0")/.."
work="${1:-/work/lite}"; steps="${2:-2}"; config="${3:-configs/deepseek-v2-lite.json}"
esft="$(pwd)/.build/release/esft"
experts="${4:-../shared/esft-reference/routing/intent/expert_config.json}"
mkdir -p "$work"
if [ "$experts" = spread ]; then
    # About 7% of each MoE layer's routed experts, a fixed spread of ids (as scripts/family_plans.sh).
    experts="$work/spread-experts.json"
    python3 scripts/spread_experts.py "$config" "$experts"
fi
task="../shared/esft-reference/datasets/train/intent.jsonl"
for f in "$experts" "$task"; do [ -e "$f" ] || { echo "lite_run: $f is missing (../shared/esft-reference)" >&2; exit 2; }; done
mkdir -p "$work/results"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
watch() { local name="$1"; shift; python3 scripts/memory_watch.py "$work/results/$name.memory.json" -- "$@"; }

if [ ! -e "$work/model/config.json" ]; then
    watch init /usr/bin/env "$esft" init "$config" "$work/model" --dtype bf16 --seed 1 --expert-shards 4
fi
if [ ! -e "$work/intent-4096.h5" ]; then
    "$esft" data prepare --tokenizer bytes --input "$task" --seq-len 4096 --out "$work/intent-4096.h5" --recipe reference \
        --model "$work/model" > "$work/results/data.txt"
fi

for job in "1 2" "2 1"; do
    set -- $job; ranks=$1; threads=$2
    "$esft" plan --model "$work/model" --experts "$experts" --ranks "$ranks" --batch-rows 1 --seq-len 4096 \
        --threads "$threads" --recompute --data "$work/intent-4096.h5" --node-memory 24GiB --ranks-per-node "$ranks" \
        > "$work/results/plan-$ranks.txt" || true
    out="$work/train-$ranks"; rm -rf "$out"
    args=(train --model "$work/model" --data "$work/intent-4096.h5" --experts "$experts" --steps "$steps" --batch-rows 1
          --lr 1e-5 --threads "$threads" --recompute --out "$out")
    if [ "$ranks" = 1 ]; then watch "train-$ranks" "$esft" "${args[@]}"
    else watch "train-$ranks" mpirun -n "$ranks" --bind-to none "$esft" "${args[@]}"; fi
    cp "$out/summary.json" "$work/results/train-$ranks.summary.json"
    cp "$out/metrics.jsonl" "$work/results/train-$ranks.metrics.jsonl"
done

rm -f "$work/scores.json"
# One sample's row (4096 tokens, ~4 min here): scoring runs the whole row of every chosen sample, and the
# reference's 16,384 tokens fall in ~70 different rows of this dataset (~4 h at 20 tokens/s on 2 cores).
watch score "$esft" score --model "$work/model" --data "$work/intent-4096.h5" --tokens 100 --batch-rows 1 --threads 2 \
    --out "$work/scores.json" > "$work/results/score.txt"
echo "lite_run: results in $work/results"

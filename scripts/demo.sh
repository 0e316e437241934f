#!/usr/bin/env bash
# The main job, end to end on an embedded default (no cluster, no downloads), in a few minutes on 2 cores:
#   1. initialise a small DeepSeek-V2-style model (configs/small.json, byte-level vocabulary)
#   2. prepare data: the ESFT reference's intent and law tasks when ../shared/esft-reference is there,
#      else a generated arithmetic corpus
#   3. briefly train it in full (--full, 2 ranks) so that routing is not random
#   4. score the experts on the task with 2 ranks, and select them (token score, p = 0.2)
#   5. train only the selected experts (ESFT) with 2 ranks of expert parallelism
#   6. export a Hugging Face directory and an ESFT adapter, and report what happened
# Outputs go to ${ESFT_DEMO_DIR:-./demo-run} (removed and rewritten on each run).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v swift >/dev/null 2>&1 || export PATH="/opt/swift/usr/bin:$PATH"
scripts/setup.sh
esft="$(pwd)/.build/release/esft"
work="${ESFT_DEMO_DIR:-$(pwd)/demo-run}"
rm -rf "$work"; mkdir -p "$work"
ranks=2
mpi=(mpirun -n $ranks --oversubscribe)
if [ "$(id -u)" -eq 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
step() { echo; echo "== $*"; }

step "1. initialise a small model"
"$esft" init configs/small.json "$work/model" --seed 1 --expert-shards $ranks
"$esft" inspect "$work/model"

step "2. prepare data"
reference="../shared/esft-reference/datasets/train"
if [ -f "$reference/law.jsonl" ] && [ -f "$reference/intent.jsonl" ]; then
    general="$reference/intent.jsonl"; task="$reference/law.jsonl"; source="the ESFT reference's intent (general) and law (task) data"
else
    general="$work/general.jsonl"; task="$work/task.jsonl"; source="a generated corpus (../shared/esft-reference is absent)"
    for i in $(seq 1 600); do a=$((i * 37 % 97)); b=$((i * 53 % 89))
        printf '{"messages": [{"role": "user", "content": "Repeat: %s %s"}, {"role": "assistant", "content": "%s %s"}]}\n' "$a" "$b" "$a" "$b"
    done > "$general"
    for i in $(seq 1 400); do a=$((i * 31 % 101)); b=$((i * 17 % 103))
        printf '{"messages": [{"role": "user", "content": "What is %s plus %s?"}, {"role": "assistant", "content": "%s"}]}\n' "$a" "$b" "$((a + b))"
    done > "$task"
fi
echo "data: $source"
"$esft" data prepare --tokenizer bytes --input "$general" --input2 "$task" --mix 1:1 --seq-len 256 --out "$work/general.h5" --seed 1
"$esft" data prepare --tokenizer bytes --input "$task" --seq-len 256 --out "$work/task.h5" --seed 2

step "3. brief full training on the mixture (2 ranks), so routing is not random"
"${mpi[@]}" "$esft" train --model "$work/model" --data "$work/general.h5" --full --steps 30 --batch-rows 8 \
    --lr 3e-3 --schedule cosine --warmup 3 --out "$work/pretrain" --threads 1 | tail -n 8
"$esft" export "$work/model" "$work/base" --trained "$work/pretrain/trained.safetensors" --format hdf5

step "4. score the experts on the task (2 ranks) and select them"
"${mpi[@]}" "$esft" score --model "$work/base" --data "$work/task.h5" --tokens 16000 --out "$work/scores.json" --threads 1
"$esft" select --scores "$work/scores.json" --method token --threshold 0.2 --model "$work/base" --out "$work/experts.json"

step "5. ESFT: train only the selected experts (2 ranks, expert parallel)"
"${mpi[@]}" "$esft" train --model "$work/base" --data "$work/task.h5" --experts "$work/experts.json" --steps 20 \
    --batch-rows 8 --lr 1e-3 --eval-every 10 --out "$work/esft" --threads 1 | tail -n 12

step "6. export"
"$esft" export "$work/base" "$work/hf" --trained "$work/esft/trained.safetensors"
"$esft" export "$work/base" "$work/adapter" --trained "$work/esft/trained.safetensors" --adapter --experts "$work/experts.json"
ls "$work/hf" "$work/adapter"

step "summary"
python3 - "$work" <<'PY' 2>/dev/null || cat "$work/esft/summary.json"
import json, sys
w = sys.argv[1]
cfg = json.load(open(f"{w}/experts.json")); s = json.load(open(f"{w}/esft/summary.json")); p = json.load(open(f"{w}/pretrain/summary.json"))
print("experts chosen per layer:", {l: e for l, e in cfg["experts"].items()})
print(f"full training: loss {p['firstLoss']:.3f} -> {p['lastLoss']:.3f}")
print(f"ESFT: loss {s['firstLoss']:.3f} -> {s['lastLoss']:.3f}, validation {s.get('lastValidationLoss')}, "
      f"{s['trainableParameters']} of {s['totalParameters']} parameters trained, {s['tokensPerSecond']:.0f} tokens/s")
print(f"bytes moved per step: {s['communicationBytesPerStep']/1e6:.2f} MB; dispatch rows {s['rowsSentPerStep']:.0f} for {s['tokenExpertPairsPerStep']:.0f} (token, expert) pairs")
for r, m in enumerate(s["memoryPerRank"]):
    print(f"rank {r}: rss {m['rssBytes']/2**20:.1f} MiB, anonymous {m['anonymousBytes']/2**20:.1f} MiB, peak {m['peakRSSBytes']/2**20:.1f} MiB, optimizer state {s['optimizerStateBytesPerRank'][r]/2**20:.2f} MiB")
PY
echo
echo "all outputs in $work"

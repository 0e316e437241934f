#!/usr/bin/env bash
# The demo's ESFT run with bf16 products against fp32 products, step by step (issue 12's bf16 check;
# developer-run, not in CI). Both runs train the same experts of the same bf16-stored copy of the demo's
# base model on the same rows: the only difference is --compute, i.e. whether the activations of the
# products with bf16 weights are rounded to bf16 (oneDNN) or the weights widened to fp32 (OpenBLAS).
#
#   scripts/bf16_loss_curve.sh [DEMO_DIR] [STEPS]     (DEMO_DIR from scripts/demo.sh; default demo-run, 20 steps)
#
# Prints each step's loss in both runs and their relative difference; exits 1 if any step differs by
# more than 1%.
set -euo pipefail
cd "$(dirname "$0")/.."
demo="${1:-demo-run}"; steps="${2:-20}"
esft="$(pwd)/.build/release/esft"
for f in base task.h5 experts.json; do
    [ -e "$demo/$f" ] || { echo "bf16_loss_curve: $demo/$f is missing: run scripts/demo.sh first (ESFT_DEMO_DIR=$demo)" >&2; exit 2; }
done
work="$demo/bf16-curve"
rm -rf "$work"; mkdir -p "$work"
"$esft" export "$demo/base" "$work/base-bf16" --format hdf5 --dtype bf16 >/dev/null 2>&1
common=(train --model "$work/base-bf16" --data "$demo/task.h5" --experts "$demo/experts.json" --steps "$steps"
        --batch-rows 8 --lr 1e-3 --threads 2)
"$esft" "${common[@]}" --gemm openblas --compute fp32 --out "$work/fp32" >/dev/null
"$esft" "${common[@]}" --gemm onednn --compute bf16 --out "$work/bf16" >/dev/null
python3 - "$work" <<'PY'
import json, sys
w = sys.argv[1]
def losses(run): return [json.loads(l)["loss"] for l in open(f"{w}/{run}/metrics.jsonl") if '"loss"' in l and '"step"' in l]
a, b = losses("fp32"), losses("bf16")
assert len(a) == len(b) and a, (len(a), len(b))
isa = json.load(open(f"{w}/bf16/summary.json")).get("gemm", {}).get("onednn_isa", "?")
print(f"step  loss fp32 products  loss bf16 products  relative difference   (oneDNN ISA {isa})")
worst = 0.0
for i, (x, y) in enumerate(zip(a, b), 1):
    r = abs(y - x) / abs(x); worst = max(worst, r)
    print(f"{i:4d}  {x:18.6f}  {y:18.6f}  {r:19.2e}")
print(f"largest relative difference {worst:.2e} ({'within' if worst <= 0.01 else 'NOT within'} 1%)")
sys.exit(0 if worst <= 0.01 else 1)
PY

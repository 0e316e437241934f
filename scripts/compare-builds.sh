#!/usr/bin/env bash
# Two builds of esft (say, before and after a refactor) must train bitwise alike: the same ESFT (with
# shared experts) and --full runs on 1 and 2 ranks, clipping active, compared byte for byte
# (trained.safetensors and the loss of every step). Exits non-zero when any pair differs.
set -euo pipefail
old=${1:?usage: scripts/compare-builds.sh OLD_ESFT NEW_ESFT}; new=${2:?usage: scripts/compare-builds.sh OLD_ESFT NEW_ESFT}
w=$(mktemp -d); trap 'rm -rf "$w"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
"$old" init "$(dirname "$0")/../configs/tiny.json" "$w/model" --seed 7 --expert-shards 2 >/dev/null
python3 - "$w" <<'PY'
import json, random, sys
random.seed(3)
with open(sys.argv[1] + "/chat.jsonl", "w") as f:
    for i in range(300):
        q = " ".join(random.choice(["alpha", "beta", "gamma", "delta", "eps"]) for _ in range(random.randint(3, 12)))
        f.write(json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": q[::-1]}]}) + "\n")
PY
"$old" data prepare --tokenizer bytes --input "$w/chat.jsonl" --seq-len 64 --out "$w/data.h5" --seed 1 >/dev/null
echo '{"experts": {"1": [0, 5, 13], "2": [7, 15]}, "shared_experts": true, "non_expert_modules": false}' > "$w/experts.json"
status=0
for mode in esft full; do
  sel=(--experts "$w/experts.json"); [ $mode = full ] && sel=(--full)
  for ranks in 1 2; do
    for bin in old new; do
      b=$old; [ $bin = new ] && b=$new
      mpirun -n $ranks --oversubscribe "$b" train --model "$w/model" --data "$w/data.h5" "${sel[@]}" --steps 6 --batch-rows 4 \
        --lr 1e-3 --grad-clip 0.01 --eval-every 3 --threads 1 --out "$w/$mode-$ranks-$bin" >/dev/null 2>&1
    done
    if cmp -s "$w/$mode-$ranks-old/trained.safetensors" "$w/$mode-$ranks-new/trained.safetensors" \
       && cmp -s <(grep -o '"loss":[^,]*' "$w/$mode-$ranks-old/metrics.jsonl") <(grep -o '"loss":[^,]*' "$w/$mode-$ranks-new/metrics.jsonl"); then
      echo "$mode $ranks ranks: trained.safetensors and losses bitwise identical"
    else
      echo "$mode $ranks ranks: DIFFER"; status=1
    fi
  done
done
exit $status

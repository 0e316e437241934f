#!/usr/bin/env bash
# Step time of two builds of esft on the same ESFT (or --full) job, interleaved (developer-run, not in CI).
#
#   scripts/train_ab.sh OLD_ESFT NEW_ESFT [CONFIG] [REPS] [STEPS] [esft|full]     (default small 4 6 esft)
#
# One random fp32 model of configs/CONFIG.json, 4 rows × 256 byte tokens of seeded random text, six routed
# experts per MoE layer trainable (or --full); REPS times OLD then NEW `esft train --threads 2`. Prints the
# median step seconds of steps 2..STEPS of each run and the first loss (equal for two builds of the same
# arithmetic). docs/performance.md ("One thread pool") quotes it.
set -euo pipefail
old=${1:?usage: scripts/train_ab.sh OLD_ESFT NEW_ESFT [CONFIG] [REPS] [STEPS] [esft|full]}
new=${2:?usage: scripts/train_ab.sh OLD_ESFT NEW_ESFT [CONFIG] [REPS] [STEPS] [esft|full]}
cfg=${3:-small}; reps=${4:-4}; steps=${5:-6}; mode=${6:-esft}
configs="$(cd "$(dirname "$0")/.." && pwd)/configs"
w=$(mktemp -d); trap 'rm -rf "$w"' EXIT
"$new" init "$configs/$cfg.json" "$w/model" --seed 1 --dtype fp32 >/dev/null
python3 - "$w" <<'PY'
import json, random, sys
w = sys.argv[1]; r = random.Random(1)
with open(w + "/text.jsonl", "w") as f:
    for _ in range(4):
        f.write(json.dumps({"text": "".join(r.choice("abcdefghijklmnopqrstuvwxyz ,.") for _ in range(254))}) + "\n")
layers = json.load(open(w + "/model/config.json"))
moe = [l for l in range(layers["num_hidden_layers"]) if l >= layers["first_k_dense_replace"]]
json.dump({"experts": {str(l): list(range(6)) for l in moe}, "shared_experts": False, "non_expert_modules": False},
          open(w + "/experts.json", "w"))
PY
"$new" data prepare --tokenizer bytes --input "$w/text.jsonl" --seq-len 256 --out "$w/data.h5" --validation-fraction 0 \
  --model "$w/model" >/dev/null
sel=(--experts "$w/experts.json"); [ "$mode" = full ] && sel=(--full)
for rep in $(seq "$reps"); do
  for which in old new; do
    bin=$old; [ $which = new ] && bin=$new
    rm -rf "$w/run"
    "$bin" train --model "$w/model" --data "$w/data.h5" "${sel[@]}" --out "$w/run" --steps "$steps" --batch-rows 4 \
      --threads 2 --lr 1e-5 >/dev/null
    python3 - "$w/run/metrics.jsonl" "$cfg $mode $which" <<'PY'
import json, statistics, sys
m = [json.loads(l) for l in open(sys.argv[1])]
print(sys.argv[2], f"{statistics.median(x['step_seconds'] for x in m[1:]):.4f} s/step", "first loss", m[0]["loss"])
PY
  done
done

#!/usr/bin/env bash
# `esft plan` for the real-shape configs of the families (docs/performance.md, "Plans at real shapes"):
# an ESFT job training ~7% of each MoE layer's routed experts (a fixed spread of ids), rows of 4096
# tokens, a global batch of max(8, R) rows, one row per rank per micro-batch, --recompute, one rank per
# node. For each model: the smallest power-of-two rank count whose node fits in 24 GiB and in 256 GiB,
# with that job's memory per rank and bytes between ranks per step.
#   scripts/family_plans.sh [.build/release/esft]
set -euo pipefail
cd "$(dirname "$0")/.."
esft=${1:-.build/release/esft}
w=$(mktemp -d); trap 'rm -rf "$w"' EXIT
for model in qwen3-30b-a3b olmoe-1b-7b qwen1.5-moe-a2.7b mixtral-8x7b deepseek-v2-lite; do
  python3 - "$model" "$w/$model.experts.json" <<'PY'
import json, sys
config = json.load(open(f"configs/{sys.argv[1]}.json"))
e = config.get("n_routed_experts") or config.get("num_experts") or config.get("num_local_experts")
layers = config["num_hidden_layers"]
if config["model_type"] == "deepseek_v2":
    moe = [l for l in range(layers) if l >= config.get("first_k_dense_replace", 0) and l % config.get("moe_layer_freq", 1) == 0]
elif config["model_type"] in ("qwen3_moe", "qwen2_moe"):
    step, dense = config.get("decoder_sparse_step", 1), set(config.get("mlp_only_layers", []))
    moe = [l for l in range(layers) if l not in dense and (l + 1) % step == 0]
else:
    moe = list(range(layers))
k = max(1, round(0.07 * e))
json.dump({"experts": {str(l): sorted({(l * 7 + j * 13) % e for j in range(k * 4)})[:k] for l in moe},
           "shared_experts": False, "non_expert_modules": False}, open(sys.argv[2], "w"))
print(f"{sys.argv[1]}: {k} of {e} routed experts in each of {len(moe)} MoE layers")
open(sys.argv[2] + ".experts", "w").write(str(e))
PY
  experts=$(cat "$w/$model.experts.json.experts")
  for node in 24GiB 256GiB; do
    fits=""
    for r in 1 2 4 8 16 32 64 128; do
      [ "$r" -le "$experts" ] || break   # expert parallelism: at most one rank per routed expert
      rows=$(( r > 8 ? r : 8 ))
      out=$("$esft" plan --model "configs/$model.json" --experts "$w/$model.experts.json" --ranks "$r" --batch-rows "$rows" \
            --accumulation $(( rows / r )) --seq-len 4096 --recompute --node-memory "$node" 2>&1) && status=0 || status=$?
      if [ "$status" -eq 0 ]; then
        worst=$(echo "$out" | awk '$1 ~ /^[0-9]+$/ && NF >= 9 { if ($(NF-3) + 0 > m) m = $(NF-3) + 0 } END { print m }')
        bytes=$(echo "$out" | grep -E "^collectives" | sed -E "s/ in all.*//; s/collectives per step \(all ranks\): //")
        echo "  $node nodes: $r (rank memory up to $worst MiB anonymous; $bytes)"
        fits=yes
        break
      fi
      [ "$status" -eq 3 ] || { echo "$out" >&2; exit 1; }
      last=$(echo "$out" | grep "^node memory")
    done
    [ -n "$fits" ] || echo "  $node nodes: no rank count up to $experts fits: ${last#node memory }"
  done
done

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
for model in qwen3-30b-a3b olmoe-1b-7b qwen1.5-moe-a2.7b mixtral-8x7b moonlight-16b-a3b deepseek-v3 kimi-k2 deepseek-v2-lite; do
  echo "$model: $(python3 scripts/spread_experts.py "configs/$model.json" "$w/$model.experts.json")"
  experts=$(python3 -c "import json,sys; c=json.load(open(sys.argv[1])); print(c.get('n_routed_experts') or c.get('num_experts') or c.get('num_local_experts'))" "configs/$model.json")
  for node in 24GiB 256GiB; do
    fits=""
    for r in 1 2 4 8 16 32 64 128 256; do
      [ "$r" -le "$experts" ] || break   # expert parallelism: at most one rank per routed expert
      tried=$r
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
    [ -n "$fits" ] || echo "  $node nodes: no rank count up to $tried fits: ${last#node memory }"
  done
done

#!/usr/bin/env python3
"""An ESFT expert config training about 7% of each MoE layer's routed experts, a fixed spread of ids, for a
real-shape config.json (scripts/family_plans.sh, scripts/lite_run.sh):

    python3 scripts/spread_experts.py CONFIG.json OUT.json      # prints "K of E routed experts in each of L MoE layers"
"""
import json
import sys

config = json.load(open(sys.argv[1]))
experts = config.get("n_routed_experts") or config.get("num_experts") or config.get("num_local_experts")
layers = range(config["num_hidden_layers"])
if config["model_type"] == "deepseek_v2":
    moe = [l for l in layers if l >= config.get("first_k_dense_replace", 0) and l % config.get("moe_layer_freq", 1) == 0]
elif config["model_type"] in ("deepseek_v3", "kimi_k2"):  # transformers ignores moe_layer_freq here
    moe = [l for l in layers if l >= config.get("first_k_dense_replace", 0)]
elif config["model_type"] in ("qwen3_moe", "qwen2_moe"):
    step, dense = config.get("decoder_sparse_step", 1), set(config.get("mlp_only_layers", []))
    moe = [l for l in layers if l not in dense and (l + 1) % step == 0]
else:
    moe = list(layers)
k = max(1, round(0.07 * experts))
def spread(layer):
    """The first k distinct ids of layer·7 + j·13 (mod E): spread over the id range, so over every rank's block."""
    ids = []
    for j in range(4 * experts):
        e = (layer * 7 + j * 13) % experts
        if e not in ids:
            ids.append(e)
        if len(ids) == k:
            break
    return sorted(ids)


json.dump({"experts": {str(l): spread(l) for l in moe},
           "shared_experts": False, "non_expert_modules": False}, open(sys.argv[2], "w"))
print(f"{k} of {experts} routed experts in each of {len(moe)} MoE layers")

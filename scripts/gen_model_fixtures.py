#!/usr/bin/env python3
"""Generate the numerical reference fixtures for the Swift DeepseekV2ForCausalLM tests.

Usage:  python3 scripts/gen_model_fixtures.py [--out Tests/Fixtures/models] [--only NAME ...]

Requires: torch, transformers (written against 5.23.0), safetensors, numpy. CPU only.

For every fixture NAME this writes Tests/Fixtures/models/NAME/ containing
  config.json                  DeepseekV2Config (one fixture rewritten to the older rope_scaling spelling)
  model*.safetensors (+index)  weights (per-expert layout; one fixture = transformers' own save_pretrained, sharded)
  inputs.json                  {"input_ids": [[...]], "labels": [[...]]}  (HF label convention, -100 = ignore)
  expected.safetensors         float32 reference values computed in float64 (see README-fixtures.md)

Everything is deterministic (fixed seeds, deterministic retry schedule); re-running reproduces identical files.

The float64 reference is transformers' own DeepseekV2ForCausalLM (model.double(), eager attention, eager experts)
with a few forward functions swapped *inside this script only*:
  * DeepseekV2TopkRouter.forward: computes in the input dtype (HF casts to float32), applies DeepSeek's
    norm_topk_prob renormalisation (HF 5.23 ignores norm_topk_prob), and records the softmax scores and
    selected experts for the auxiliary loss / near-tie checks.
  * DeepseekV2RMSNorm.forward, DeepseekV2RotaryEmbedding.forward, apply_rotary_emb, eager_attention_forward:
    identical math, but they no longer force float32 intermediates when the model runs in float64.
For float32 inputs every patched function performs exactly the original operations; the script checks this
(bit-identical outputs and gradients against the unpatched model for norm_topk_prob=false) and also compares
the float64 reference with the completely unpatched float32 transformers model (sdpa + grouped_mm).
"""

import contextlib
import copy
import json
import os
import sys

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from transformers import DeepseekV2Config, DeepseekV2ForCausalLM
from transformers.models.deepseek_v2 import modeling_deepseek_v2 as mdv2

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fixture_common as fc  # noqa: E402  (helpers shared with the other fixture generators)
from fixture_common import causal_lm_loss, rel_err  # noqa: E402

fc.setup()

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO_ROOT, "Tests", "Fixtures", "models")

from model_fixture_specs import FIXTURES  # noqa: E402  (the fixture definitions, scripts/model_fixture_specs.py)
from hf_float64_patches import ROUTER_RECORDS, hf_patches, rope_inv_freq_f64  # noqa: E402  (the reference patches)

# --------------------------------------------------------------------------------------------------------------
# Model construction, weights, inputs
# --------------------------------------------------------------------------------------------------------------


def make_config(spec):
    return fc.make_config(DeepseekV2Config, DeepseekV2ForCausalLM, spec)


def attach_router_flags(model):
    for mod in model.modules():
        if isinstance(mod, mdv2.DeepseekV2TopkRouter):
            mod.fixture_norm_topk_prob = bool(model.config.norm_topk_prob)


def is_norm_weight(name):
    return name.endswith("layernorm.weight") or name == "model.norm.weight"


def build_model(spec, seed):
    model, _ = fc.build_random_model(DeepseekV2ForCausalLM, make_config(spec), seed, spec["weight_dtype"],
                                     is_norm_weight)
    attach_router_flags(model)
    model.eval()
    return model


# --------------------------------------------------------------------------------------------------------------
# Per-expert naming
# --------------------------------------------------------------------------------------------------------------


def to_per_expert(named_tensors, moe_intermediate_size):
    """transformers 5.23 in-memory names -> DeepSeek checkpoint names (mlp.experts.E.{gate,up,down}_proj.weight).
    Zero-sized tensors (the width-0 shared MLP when n_shared_experts == 0) are dropped."""
    return fc.unfuse_experts(named_tensors, moe_intermediate_size, drop_empty=True)


# --------------------------------------------------------------------------------------------------------------
# Reference computation
# --------------------------------------------------------------------------------------------------------------


def seq_aux_loss(records, n_experts, top_k):
    """DeepSeek sequence-level balance loss, alpha = 1, summed over MoE layers."""
    total = 0.0
    per_layer = []
    for rec in records:
        B, T = rec["batch_shape"]
        s = rec["scores"].view(B, T, n_experts)
        idx = rec["topk_indices"].view(B, T * top_k)
        ce = torch.zeros(B, n_experts, dtype=s.dtype)
        ce.scatter_add_(1, idx, torch.ones(B, T * top_k, dtype=s.dtype))
        ce = ce / (T * top_k / n_experts)  # constant, no gradient
        layer = (ce * s.mean(dim=1)).sum(dim=1).mean()
        per_layer.append(layer)
        total = total + layer
    return total, per_layer


def moe_layer_ids(cfg):
    return [i for i in range(cfg.num_hidden_layers) if i >= cfg.first_k_dense_replace]


def run_reference(model32, input_ids, labels):
    """float64 forward/backward through transformers' model with the dtype-faithful patches."""
    model = copy.deepcopy(model32).double()
    attach_router_flags(model)
    model.set_attn_implementation("eager")
    model.set_experts_implementation("eager")
    cfg = model.config
    params = [(n, p) for n, p in model.named_parameters()]
    with hf_patches(router=True, float64=True):
        out = model(input_ids=input_ids, labels=labels)
        records = list(ROUTER_RECORDS)
        logits = out.logits
        assert logits.dtype == torch.float64
        loss = causal_lm_loss(logits, labels)
        hf_loss = out.loss  # transformers casts logits to float32 for its own loss
        aux, aux_layers = seq_aux_loss(records, cfg.n_routed_experts, cfg.num_experts_per_tok)
        aux_grads = torch.autograd.grad(aux, [p for _, p in params], allow_unused=True, retain_graph=True)
        grads = torch.autograd.grad(loss, [p for _, p in params], allow_unused=True)
    zeros = lambda p: torch.zeros_like(p)
    res = dict(
        logits=logits.detach(),
        loss=loss.detach(),
        hf_loss=hf_loss.detach(),
        aux=aux.detach(),
        aux_layers=[a.detach() for a in aux_layers],
        grads={n: (g if g is not None else zeros(p)).detach() for (n, p), g in zip(params, grads)},
        aux_grads={n: (g if g is not None else zeros(p)).detach() for (n, p), g in zip(params, aux_grads)},
        records=[{k: (v.detach() if torch.is_tensor(v) else v) for k, v in r.items()} for r in records],
    )
    assert len(records) == len(moe_layer_ids(cfg)), (len(records), moe_layer_ids(cfg))
    return res


def min_routing_gaps(records, cfg):
    """Smallest float64 gap between the K-th and (K+1)-th candidate score (and, for group_limited_greedy,
    between the topk_group-th and next group score) over all tokens and MoE layers."""
    K = cfg.num_experts_per_tok
    min_gap, min_group_gap = float("inf"), float("inf")
    for rec in records:
        cand = rec["candidate_scores"].sort(dim=-1, descending=True).values
        min_gap = min(min_gap, (cand[:, K - 1] - cand[:, K]).min().item())
        if rec["group_scores"] is not None:
            g = rec["group_scores"].sort(dim=-1, descending=True).values
            tg = cfg.topk_group
            if tg < g.shape[1]:
                min_group_gap = min(min_group_gap, (g[:, tg - 1] - g[:, tg]).min().item())
    return min_gap, min_group_gap


def run_fp32(model32, input_ids, labels, router_patch):
    """Plain transformers float32 forward/backward (default sdpa attention + grouped_mm experts). router_patch
    installs only the router replacement (needed when norm_topk_prob is true)."""
    model = copy.deepcopy(model32)
    attach_router_flags(model)
    params = list(model.named_parameters())
    ctx = hf_patches(router=True, float64=False) if router_patch else contextlib.nullcontext()
    with ctx:
        out = model(input_ids=input_ids, labels=labels)
        grads = torch.autograd.grad(out.loss, [p for _, p in params], allow_unused=True)
    return dict(
        logits=out.logits.detach(),
        loss=out.loss.detach(),
        grads={n: (g if g is not None else torch.zeros_like(p)) for (n, p), g in zip(params, grads)},
    )


# --------------------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------------------


def config_dict(model, spec):
    d = json.loads(model.config.to_json_string(use_diff=True))  # what save_pretrained writes
    d["dtype"] = spec["weight_dtype"]
    required = [
        "vocab_size", "hidden_size", "intermediate_size", "moe_intermediate_size", "num_hidden_layers",
        "num_attention_heads", "num_key_value_heads", "q_lora_rank", "kv_lora_rank", "qk_nope_head_dim",
        "qk_rope_head_dim", "v_head_dim", "attention_bias", "n_routed_experts", "n_shared_experts",
        "num_experts_per_tok", "first_k_dense_replace", "moe_layer_freq", "topk_method", "n_group", "topk_group",
        "norm_topk_prob", "routed_scaling_factor", "rms_norm_eps", "max_position_embeddings",
        "tie_word_embeddings", "hidden_act", "initializer_range",
    ]
    for k in required:
        assert k in d, k
        if k in spec["config"]:
            assert d[k] == spec["config"][k], (k, d[k], spec["config"][k])
    if spec["old_rope_spelling"]:
        rp = d.pop("rope_parameters")
        assert rp["rope_type"] == "yarn"
        d["rope_theta"] = rp["rope_theta"]
        d["rope_scaling"] = {
            "type": "yarn",
            "factor": rp["factor"],
            "original_max_position_embeddings": rp["original_max_position_embeddings"],
            "beta_fast": rp["beta_fast"],
            "beta_slow": rp["beta_slow"],
            "mscale": rp["mscale"],
            "mscale_all_dim": rp["mscale_all_dim"],
        }
        # DeepSeek-V2-Lite's config.json has no derived head_dim / qk_head_dim and says torch_dtype
        d.pop("head_dim", None)
        d.pop("qk_head_dim", None)
        d["torch_dtype"] = d.pop("dtype")
        # fields DeepSeek's own config carries (ignored by transformers; aux expected values use alpha = 1)
        d.update({"aux_loss_alpha": 0.001, "seq_aux": True, "scoring_func": "softmax", "ep_size": 1})
    return d


def write_per_expert(model, spec, out_dir):
    named = {n: p.detach() for n, p in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        named.pop("lm_head.weight", None)
    tensors = to_per_expert(named, model.config.moe_intermediate_size)
    dt = torch.bfloat16 if spec["weight_dtype"] == "bfloat16" else torch.float32
    out = {}
    for k, v in tensors.items():
        c = v.to(dt)
        assert torch.equal(c.to(torch.float32), v), f"{k} not exactly representable in {dt}"
        out[k] = c.contiguous()
    save_file(out, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    return sorted(out)


def write_hf_sharded(model, out_dir):
    """model.save_pretrained(safe_serialization=True), with a max_shard_size that yields exactly 2 shards."""
    frac = fc.save_with_transformers(model, out_dir, 2, fractions=(0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.45, 0.4),
                                     tmp_prefix="dsv2fx_", safe_serialization=True)
    idx = json.load(open(os.path.join(out_dir, "model.safetensors.index.json")))
    return sorted(idx["weight_map"]), frac


def describe_hf_saved(out_dir):
    idx = json.load(open(os.path.join(out_dir, "model.safetensors.index.json")))
    rows = []
    for name, fname in sorted(idx["weight_map"].items()):
        with safe_open(os.path.join(out_dir, fname), "pt") as f:
            sl = f.get_slice(name)
            rows.append((name, sl.get_shape(), sl.get_dtype(), fname))
    return idx["metadata"], rows


# --------------------------------------------------------------------------------------------------------------
# Main per-fixture driver
# --------------------------------------------------------------------------------------------------------------


def generate(spec, out_root, max_attempts=200):
    name = spec["name"]
    print(f"\n=== {name}: {spec['note']}")
    cfg = make_config(spec)
    E = cfg.n_routed_experts

    # deterministic retry schedule until every routing decision has a float64 margin > TIE_GAP
    def attempt(seed):
        model32 = build_model(spec, seed)
        input_ids, labels = fc.make_inputs(spec, seed)
        ref = run_reference(model32, input_ids, labels)
        gap, ggap = min_routing_gaps(ref["records"], model32.config)
        return {"min gap": gap, "group gap": ggap}, (model32, input_ids, labels, ref)

    seed, gaps, (model32, input_ids, labels, ref) = fc.first_tie_free_seed(spec, attempt, max_attempts)
    gap, ggap = gaps["min gap"], gaps["group gap"]
    print(f"  seed {seed}; min top-k score gap {gap:.4g}; min group gap {ggap:.4g}")

    # ---- checks against transformers itself ---------------------------------------------------------------
    # (1) rope: float64 re-derivation == transformers' float32 inv_freq / attention factor
    inv64, af64 = rope_inv_freq_f64(model32.config)
    rot = model32.model.rotary_emb
    assert torch.allclose(inv64.float(), rot.inv_freq, rtol=1e-6, atol=0), (inv64, rot.inv_freq)
    assert abs(af64 - rot.attention_scaling) < 1e-12, (af64, rot.attention_scaling)
    print(f"  rope inv_freq {[round(x, 8) for x in inv64.tolist()]}, cos/sin factor {af64:.12g}, "
          f"softmax scale {model32.model.layers[0].self_attn.scaling:.12g}")
    # (2) our float64 loss == transformers' loss (which it computes from float32-cast logits)
    assert abs(ref["loss"].item() - ref["hf_loss"].item()) < 1e-5 * max(1.0, abs(ref["loss"].item()))
    # (3) router patch == original router for norm_topk_prob = false (bitwise, float32 model)
    plain = run_fp32(model32, input_ids, labels, router_patch=False)
    patched = run_fp32(model32, input_ids, labels, router_patch=True)
    same = torch.equal(plain["logits"], patched["logits"]) and all(
        torch.equal(plain["grads"][n], patched["grads"][n]) for n in plain["grads"]
    )
    if not cfg.norm_topk_prob:
        assert same, "patched router differs from transformers' router although norm_topk_prob is false"
        print("  norm_topk_prob=false: patched router == transformers router (bitwise logits and grads, fp32)")
    else:
        print(f"  norm_topk_prob=true: router patched (DeepSeek renormalisation); transformers' own router "
              f"would give logits rel diff {rel_err(plain['logits'], patched['logits']):.3g}")
    # (4) float64 reference vs fully unpatched float32 transformers (sdpa, grouped_mm)
    fp32 = patched if cfg.norm_topk_prob else plain
    errs = {
        "logits": rel_err(fp32["logits"], ref["logits"]),
        "loss": rel_err(fp32["loss"], ref["loss"]),
        "grads": max(rel_err(fp32["grads"][n], ref["grads"][n]) for n in ref["grads"] if ref["grads"][n].numel()),
    }
    print("  fp32 transformers vs float64 reference, max rel err: "
          + ", ".join(f"{k} {v:.2e}" for k, v in errs.items()))
    assert errs["logits"] < 1e-4 and errs["loss"] < 1e-4 and errs["grads"] < 1e-3, errs

    # ---- write ---------------------------------------------------------------------------------------------
    out_dir = fc.fresh_dir(out_root, name)

    if spec["layout"] == "per_expert":
        weight_names = write_per_expert(model32, spec, out_dir)
        fc.write_json(os.path.join(out_dir, "config.json"), config_dict(model32, spec))
    else:
        assert spec["weight_dtype"] == "float32" and not spec["old_rope_spelling"]
        weight_names, frac = write_hf_sharded(model32, out_dir)
        # keep save_pretrained's files as written, but make sure the config has every field we rely on
        written = json.load(open(os.path.join(out_dir, "config.json")))
        ours = config_dict(model32, spec)
        for k in ours:
            assert written.get(k) == ours[k] or k == "dtype", (k, written.get(k), ours[k])
        meta, rows = describe_hf_saved(out_dir)
        print(f"  save_pretrained(max_shard_size={frac}*total) wrote index metadata {meta}; tensors:")
        for r in rows:
            if ".experts." in r[0] or ".gate." in r[0] or "shared" in r[0]:
                if ".experts." in r[0] and not (".experts.0." in r[0] or f".experts.{E - 1}." in r[0]):
                    continue
                print(f"    {r[0]} {r[1]} {r[2]} -> {r[3]}")

    fc.write_inputs(os.path.join(out_dir, "inputs.json"), input_ids, labels)

    expected = {
        "logits": ref["logits"].float().contiguous(),
        "loss": ref["loss"].reshape(1).float(),
        "aux_loss": ref["aux"].reshape(1).float(),
    }
    named_grads = ref["grads"]
    named_aux = ref["aux_grads"]
    I = cfg.moe_intermediate_size
    for k, v in to_per_expert(named_grads, I).items():
        expected["grad." + k] = v.float().contiguous()
    for k, v in to_per_expert(named_aux, I).items():
        expected["auxgrad." + k] = v.float().contiguous()
    for layer, rec in zip(moe_layer_ids(cfg), ref["records"]):
        expected[f"topk_idx.{layer}"] = rec["topk_indices"].sort(dim=-1).values.float().contiguous()
    fc.save_expected(out_dir, expected)

    # every stored weight has a grad and an auxgrad, and nothing else
    gnames = sorted(k[5:] for k in expected if k.startswith("grad."))
    anames = sorted(k[8:] for k in expected if k.startswith("auxgrad."))
    assert gnames == anames == sorted(weight_names), (set(gnames) ^ set(weight_names))

    # ---- round trip: transformers loads what we wrote, and reproduces the reference -------------------------
    loaded = fc.check_round_trip(DeepseekV2Config, DeepseekV2ForCausalLM, spec, out_dir, model32)
    ref2 = run_reference(loaded, input_ids, labels)
    assert torch.equal(ref2["logits"], ref["logits"]) and torch.equal(ref2["loss"], ref["loss"])
    disk, _ = fc.load_disk_weights(out_dir)
    print(f"  round trip OK: from_pretrained reproduces the weights bit-exactly and the reference logits; "
          f"{len(disk)} stored tensors ({sorted({str(t.dtype) for t in disk.values()})})")

    print(f"  loss {ref['loss'].item():.10g}  aux_loss {ref['aux'].item():.10g} "
          f"(per layer {[round(a.item(), 8) for a in ref['aux_layers']]})")
    for layer, rec in zip(moe_layer_ids(cfg), ref["records"]):
        counts = torch.bincount(rec["topk_indices"].reshape(-1), minlength=E).tolist()
        print(f"  layer {layer} expert load {counts}")
    return dict(name=name, seed=seed, gap=gap, group_gap=ggap, errs=errs)


def main():
    fc.run_generator(DEFAULT_OUT, FIXTURES, generate)


if __name__ == "__main__":
    main()

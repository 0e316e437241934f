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

import argparse
import contextlib
import copy
import json
import logging
import math
import os
import shutil
import tempfile
import warnings

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file

import transformers
from transformers import DeepseekV2Config, DeepseekV2ForCausalLM
from transformers.models.deepseek_v2 import modeling_deepseek_v2 as mdv2

warnings.filterwarnings("ignore")
transformers.logging.set_verbosity_error()
logging.getLogger("transformers").setLevel(logging.ERROR)

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO_ROOT, "Tests", "Fixtures", "models")
TIE_GAP = 1e-4  # minimum float64 score gap around every routing decision

from model_fixture_specs import FIXTURES  # the fixture definitions (scripts/model_fixture_specs.py)


from hf_float64_patches import ROUTER_RECORDS, hf_patches, rope_inv_freq_f64  # noqa: E402  (transformers patches for the reference)

# --------------------------------------------------------------------------------------------------------------
# Model construction, weights, inputs
# --------------------------------------------------------------------------------------------------------------


def make_config(spec):
    cfg = DeepseekV2Config(**copy.deepcopy(spec["config"]))
    cfg.architectures = ["DeepseekV2ForCausalLM"]
    return cfg


def attach_router_flags(model):
    for mod in model.modules():
        if isinstance(mod, mdv2.DeepseekV2TopkRouter):
            mod.fixture_norm_topk_prob = bool(model.config.norm_topk_prob)


def is_norm_weight(name):
    return name.endswith("layernorm.weight") or name == "model.norm.weight"


def build_model(spec, seed):
    cfg = make_config(spec)
    torch.manual_seed(seed)
    model = DeepseekV2ForCausalLM(cfg).to(torch.float32)
    gen = torch.Generator().manual_seed(seed)
    std = cfg.initializer_range
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):  # tied lm_head is deduplicated here
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float64)
            if is_norm_weight(name):
                val = 1.0 + 0.1 * noise
            elif name.endswith(".bias"):
                val = 0.1 * noise
            else:
                val = std * noise
            if spec["weight_dtype"] == "bfloat16":
                val = val.to(torch.bfloat16)
            p.copy_(val.to(torch.float32))
    if cfg.tie_word_embeddings:
        assert model.lm_head.weight is model.model.embed_tokens.weight
    attach_router_flags(model)
    model.eval()
    return model


def make_inputs(spec, seed):
    gen = torch.Generator().manual_seed(seed + 7)
    V, T = spec["config"]["vocab_size"], spec["seq_len"]
    input_ids = torch.randint(0, V, (2, T), generator=gen)
    labels = input_ids.clone()
    # a few labels differ from the inputs so that mixing up input_ids/labels is caught
    for b in range(2):
        pos = torch.randperm(T - 1, generator=gen)[:3] + 1
        for t in pos.tolist():
            labels[b, t] = (input_ids[b, t] + 1 + torch.randint(0, V - 1, (1,), generator=gen)) % V
    labels[0, :4] = -100  # first 4 positions of row 0
    mid = T // 2 - 2
    labels[1, mid : mid + 3] = -100  # a middle span of row 1
    return input_ids, labels


# --------------------------------------------------------------------------------------------------------------
# Per-expert naming
# --------------------------------------------------------------------------------------------------------------


def to_per_expert(named_tensors, moe_intermediate_size):
    """transformers 5.23 in-memory names -> DeepSeek checkpoint names. Fused experts:
    mlp.experts.gate_up_proj [E, 2I, H] (rows [0,I) = gate_proj, [I,2I) = up_proj), mlp.experts.down_proj [E, H, I].
    Zero-sized tensors (the width-0 shared MLP when n_shared_experts == 0) are dropped."""
    out = {}
    I = moe_intermediate_size
    for name, t in named_tensors.items():
        if t.numel() == 0:
            continue
        if name.endswith("mlp.experts.gate_up_proj"):
            prefix = name[: -len("gate_up_proj")]
            assert t.dim() == 3 and t.shape[1] == 2 * I
            for e in range(t.shape[0]):
                out[f"{prefix}{e}.gate_proj.weight"] = t[e, :I, :].contiguous()
                out[f"{prefix}{e}.up_proj.weight"] = t[e, I:, :].contiguous()
        elif name.endswith("mlp.experts.down_proj"):
            prefix = name[: -len("down_proj")]
            assert t.dim() == 3 and t.shape[2] == I
            for e in range(t.shape[0]):
                out[f"{prefix}{e}.down_proj.weight"] = t[e].contiguous()
        else:
            out[name] = t.contiguous()
    return out


# --------------------------------------------------------------------------------------------------------------
# Reference computation
# --------------------------------------------------------------------------------------------------------------


def causal_lm_loss(logits, labels):
    """HF ForCausalLMLoss (no num_items_in_batch): mean CE of logits[:, t] vs labels[:, t+1] over labels != -100."""
    V = logits.shape[-1]
    return F.cross_entropy(
        logits[:, :-1, :].reshape(-1, V), labels[:, 1:].reshape(-1), ignore_index=-100, reduction="mean"
    )


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


def rel_err(a, b):
    a, b = a.double(), b.double()
    scale = max(b.abs().max().item(), 1e-30)
    return (a - b).abs().max().item() / scale


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


def write_json(path, obj, sort_keys=True):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=sort_keys)
        f.write("\n")


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
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    for frac in (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.45, 0.4):
        tmp = tempfile.mkdtemp(prefix="dsv2fx_")
        try:
            model.save_pretrained(tmp, safe_serialization=True, max_shard_size=int(total * frac))
            shards = sorted(f for f in os.listdir(tmp) if f.endswith(".safetensors"))
            if shards == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]:
                for f in sorted(os.listdir(tmp)):
                    shutil.copy(os.path.join(tmp, f), os.path.join(out_dir, f))
                idx = json.load(open(os.path.join(out_dir, "model.safetensors.index.json")))
                return sorted(idx["weight_map"]), frac
        finally:
            shutil.rmtree(tmp)
    raise RuntimeError("could not obtain exactly two shards from save_pretrained")


def describe_hf_saved(out_dir):
    idx = json.load(open(os.path.join(out_dir, "model.safetensors.index.json")))
    rows = []
    for name, fname in sorted(idx["weight_map"].items()):
        with safe_open(os.path.join(out_dir, fname), "pt") as f:
            sl = f.get_slice(name)
            rows.append((name, sl.get_shape(), sl.get_dtype(), fname))
    return idx["metadata"], rows


def load_all_weights(out_dir):
    files = sorted(f for f in os.listdir(out_dir) if f.endswith(".safetensors") and f != "expected.safetensors")
    res = {}
    for fname in files:
        with safe_open(os.path.join(out_dir, fname), "pt") as f:
            for k in f.keys():
                res[k] = f.get_tensor(k)
    return res


# --------------------------------------------------------------------------------------------------------------
# Main per-fixture driver
# --------------------------------------------------------------------------------------------------------------


def generate(spec, out_root, max_attempts=200):
    name = spec["name"]
    print(f"\n=== {name}: {spec['note']}")
    cfg = make_config(spec)
    K, E = cfg.num_experts_per_tok, cfg.n_routed_experts

    # deterministic retry schedule until every routing decision has a float64 margin > TIE_GAP
    for attempt in range(max_attempts):
        seed = spec["seed"] + attempt
        model32 = build_model(spec, seed)
        input_ids, labels = make_inputs(spec, seed)
        ref = run_reference(model32, input_ids, labels)
        gap, ggap = min_routing_gaps(ref["records"], model32.config)
        if gap > TIE_GAP and ggap > TIE_GAP:
            break
        print(f"  seed {seed}: routing near-tie (min gap {gap:.3g}, group gap {ggap:.3g}); retrying")
    else:
        raise RuntimeError("no tie-free seed found")
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
    out_dir = os.path.join(out_root, name)
    if os.path.exists(out_dir):
        shutil.rmtree(out_dir)
    os.makedirs(out_dir)

    if spec["layout"] == "per_expert":
        weight_names = write_per_expert(model32, spec, out_dir)
        write_json(os.path.join(out_dir, "config.json"), config_dict(model32, spec))
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

    with open(os.path.join(out_dir, "inputs.json"), "w") as f:  # one row per line
        rows = lambda t: ",\n    ".join(json.dumps(r) for r in t.tolist())
        f.write(f'{{\n  "input_ids": [\n    {rows(input_ids)}\n  ],\n  "labels": [\n    {rows(labels)}\n  ]\n}}\n')
    assert json.load(open(os.path.join(out_dir, "inputs.json"))) == {
        "input_ids": input_ids.tolist(), "labels": labels.tolist()}

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
    save_file(expected, os.path.join(out_dir, "expected.safetensors"), metadata={"format": "pt"})

    # every stored weight has a grad and an auxgrad, and nothing else
    gnames = sorted(k[5:] for k in expected if k.startswith("grad."))
    anames = sorted(k[8:] for k in expected if k.startswith("auxgrad."))
    assert gnames == anames == sorted(weight_names), (set(gnames) ^ set(weight_names))

    # ---- round trip: transformers loads what we wrote, and reproduces the reference -------------------------
    loaded_cfg = DeepseekV2Config.from_pretrained(out_dir)
    for k, v in spec["config"].items():
        if k == "rope_parameters":
            for rk, rv in v.items():
                assert loaded_cfg.rope_parameters[rk] == rv, (rk, loaded_cfg.rope_parameters)
        else:
            assert getattr(loaded_cfg, k) == v, (k, getattr(loaded_cfg, k), v)
    loaded = DeepseekV2ForCausalLM.from_pretrained(out_dir, dtype=torch.float32)
    sd_mem, sd_disk = model32.state_dict(), loaded.state_dict()
    assert sorted(sd_mem) == sorted(sd_disk)
    for k in sd_mem:
        assert torch.equal(sd_mem[k], sd_disk[k]), f"round-trip mismatch for {k}"
    if cfg.tie_word_embeddings:
        assert loaded.lm_head.weight is loaded.model.embed_tokens.weight
    ref2 = run_reference(loaded, input_ids, labels)
    assert torch.equal(ref2["logits"], ref["logits"]) and torch.equal(ref2["loss"], ref["loss"])
    disk = load_all_weights(out_dir)
    print(f"  round trip OK: from_pretrained reproduces the weights bit-exactly and the reference logits; "
          f"{len(disk)} stored tensors ({sorted({str(t.dtype) for t in disk.values()})})")

    print(f"  loss {ref['loss'].item():.10g}  aux_loss {ref['aux'].item():.10g} "
          f"(per layer {[round(a.item(), 8) for a in ref['aux_layers']]})")
    for layer, rec in zip(moe_layer_ids(cfg), ref["records"]):
        counts = torch.bincount(rec["topk_indices"].reshape(-1), minlength=E).tolist()
        print(f"  layer {layer} expert load {counts}")
    return dict(name=name, seed=seed, gap=gap, group_gap=ggap, errs=errs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--only", nargs="*")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, transformers {transformers.__version__}")
    os.makedirs(args.out, exist_ok=True)
    for spec in FIXTURES:
        if args.only and spec["name"] not in args.only:
            continue
        generate(spec, args.out)
    total = 0
    for root, _, files in os.walk(args.out):
        for f in files:
            total += os.path.getsize(os.path.join(root, f))
    print(f"\ntotal size of {args.out}: {total} bytes")


if __name__ == "__main__":
    main()

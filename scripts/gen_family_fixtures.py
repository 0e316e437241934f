#!/usr/bin/env python3
"""Generate numerical reference fixtures for the qwen3_moe, qwen2_moe, olmoe and mixtral model families.

Usage:  python3 scripts/gen_family_fixtures.py [--out Tests/Fixtures/families] [--only NAME ...]

Requires: torch, transformers (written against 5.25.0), safetensors. CPU only, one thread.

For every fixture NAME (scripts/family_fixture_specs.py) this writes Tests/Fixtures/families/NAME/ with
  config.json, generation_config.json,   exactly as transformers' save_pretrained writes them
  model.safetensors or shards + index    (per-expert tensor names; F32 or BF16)
  inputs.json                            {"input_ids": [[...]], "labels": [[...]]}  (HF convention, -100 = ignore)
  expected.safetensors                   float32 values computed in float64 (see README-family-fixtures.md):
                                         logits, loss, aux_loss, grad.<w>, auxgrad.<w>, topk_idx.<layer>

The float64 reference is transformers' own <Family>ForCausalLM (model.double(), eager attention, eager experts,
output_router_logits=True, attention_mask=None). Transformers forces float32 in a few places even for a float64
model (RMSNorm, RoPE inverse frequencies and cos/sin, the attention softmax, the router softmax, the
load-balancing loss accumulators, and the LM loss). Inside this script only, those functions are replaced by
versions doing the same operations in promote_types(input dtype, float32), i.e. unchanged for float32 / bf16
inputs and float64 for float64 inputs. The script checks that the patched model is bit-identical to the unpatched
one in float32 (and bf16), compares the float64 reference with the completely unpatched float32 model
(sdpa attention, grouped_mm experts), re-derives logits, aux loss and all gradients with an independent plain
torch implementation that reads the written per-expert files (the math in README-family-fixtures.md), and stops
on the first failed check. Output is deterministic: fixed seeds, fixed retry schedule.
"""

import contextlib
import copy
import json
import os
import sys

import torch
import torch.nn.functional as F

from transformers import (
    MixtralConfig,
    MixtralForCausalLM,
    OlmoeConfig,
    OlmoeForCausalLM,
    Qwen2MoeConfig,
    Qwen2MoeForCausalLM,
    Qwen3MoeConfig,
    Qwen3MoeForCausalLM,
)
from transformers.models.mixtral import modeling_mixtral as m_mixtral
from transformers.models.olmoe import modeling_olmoe as m_olmoe
from transformers.models.qwen2_moe import modeling_qwen2_moe as m_qwen2
from transformers.models.qwen3_moe import modeling_qwen3_moe as m_qwen3

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fixture_common as fc  # noqa: E402  (helpers shared with the other fixture generators)
from fixture_common import (  # noqa: E402
    causal_lm_loss, check, compute_dtype, eager_copy, grads_of, max_rel_over, rel_err,
)
from family_fixture_specs import FIXTURES  # noqa: E402

fc.setup()

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO_ROOT, "Tests", "Fixtures", "families")
MAX_BYTES = 3 * 1024 * 1024

FAMILIES = {
    "qwen3_moe": dict(mod=m_qwen3, prefix="Qwen3Moe", config_cls=Qwen3MoeConfig, model_cls=Qwen3MoeForCausalLM),
    "qwen2_moe": dict(mod=m_qwen2, prefix="Qwen2Moe", config_cls=Qwen2MoeConfig, model_cls=Qwen2MoeForCausalLM),
    "olmoe": dict(mod=m_olmoe, prefix="Olmoe", config_cls=OlmoeConfig, model_cls=OlmoeForCausalLM),
    "mixtral": dict(mod=m_mixtral, prefix="Mixtral", config_cls=MixtralConfig, model_cls=MixtralForCausalLM),
}


# --------------------------------------------------------------------------------------------------------------
# float64-faithful replacements of the transformers functions that force float32 intermediates (the ones all
# families share are in fixture_common.py): compute dtype promote_types(input dtype, float32).
# --------------------------------------------------------------------------------------------------------------


def rope_head_dim(config):
    # compute_default_rope_parameters: getattr(config, "head_dim", None) or hidden_size // num_attention_heads
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def rope_inv_freq_f64(config):
    """float64 re-derivation of compute_default_rope_parameters (which uses float32)."""
    check(config.rope_parameters["rope_type"] == "default", "only default RoPE is covered")
    return fc.rope_params_f64(config, rope_head_dim(config))[0]


def rope_f64(rot):
    """float64 (inv_freq, cos/sin factor) of a <Family>RotaryEmbedding module (default RoPE only)."""
    check(rot.rope_type == "default", "only default RoPE is covered")
    return rope_inv_freq_f64(rot.config), rot.attention_scaling


def patched_topk_router_forward(self, hidden_states):
    # Qwen3MoeTopKRouter / Qwen2MoeTopKRouter / OlmoeTopKRouter.forward; original: softmax(dtype=torch.float)
    hidden_states = hidden_states.reshape(-1, self.hidden_dim)
    router_logits = F.linear(hidden_states, self.weight)
    router_probs = F.softmax(router_logits, dtype=compute_dtype(router_logits.dtype), dim=-1)
    router_top_value, router_indices = torch.topk(router_probs, self.top_k, dim=-1)
    if self.norm_topk_prob:
        router_top_value /= router_top_value.sum(dim=-1, keepdim=True)
    router_top_value = router_top_value.to(router_logits.dtype)
    return router_logits, router_top_value, router_indices


def patched_mixtral_router_forward(self, hidden_states):
    # MixtralTopKRouter.forward; original: softmax(router_logits.float()), weights returned in float32
    hidden_states = hidden_states.reshape(-1, self.hidden_dim)
    router_logits = F.linear(hidden_states, self.weight)
    router_probs = F.softmax(router_logits.to(compute_dtype(router_logits.dtype)), dim=-1)
    router_top_value, router_indices = torch.topk(router_probs, self.top_k, dim=-1)
    router_top_value /= router_top_value.sum(dim=-1, keepdim=True)
    return router_logits, router_top_value, router_indices


def patched_load_balancing_loss_func(gate_logits, num_experts=None, top_k=2, attention_mask=None):
    # load_balancing_loss_func (identical in the four modeling files); original: float32 accumulators
    if gate_logits is None or not isinstance(gate_logits, tuple):
        return 0
    compute_device = gate_logits[0].device
    acc = compute_dtype(gate_logits[0].dtype)
    histc_dtype = torch.float32 if compute_device.type in ("cpu", "mps") else torch.int32
    tokens_per_expert_sum = torch.zeros(num_experts, dtype=acc, device=compute_device)
    router_prob_sum = torch.zeros(num_experts, dtype=acc, device=compute_device)
    total_rows = 0.0
    if attention_mask is not None:
        flat_mask = attention_mask.reshape(-1).to(device=compute_device, dtype=acc)
    for layer_gate in gate_logits:
        routing_weights = torch.nn.functional.softmax(layer_gate.to(compute_device), dim=-1)
        _, selected_experts = torch.topk(routing_weights, top_k, dim=-1)
        if attention_mask is None:
            tokens_per_expert_sum = tokens_per_expert_sum + torch.histc(
                selected_experts.reshape(-1).to(histc_dtype), bins=num_experts, min=0, max=num_experts
            ).to(acc)
            router_prob_sum = router_prob_sum + routing_weights.to(acc).sum(dim=0)
            total_rows = total_rows + routing_weights.shape[0]
        else:
            tokens_per_expert_sum = tokens_per_expert_sum + torch.zeros(
                num_experts, dtype=acc, device=compute_device
            ).scatter_add_(0, selected_experts.reshape(-1), flat_mask.repeat_interleave(top_k))
            router_prob_sum = router_prob_sum + (routing_weights.to(acc) * flat_mask.unsqueeze(-1)).sum(dim=0)
            total_rows = total_rows + flat_mask.sum()
    tokens_per_expert = tokens_per_expert_sum / total_rows
    router_prob_per_expert = router_prob_sum / total_rows
    overall_loss = torch.sum(tokens_per_expert * router_prob_per_expert.unsqueeze(0))
    return overall_loss * num_experts


@contextlib.contextmanager
def hf_float64_patches(family):
    """Install the float64-faithful functions into the family's modeling module for the duration of the block."""
    fam = FAMILIES[family]
    mod, p = fam["mod"], fam["prefix"]
    rms, rot, router = getattr(mod, p + "RMSNorm"), getattr(mod, p + "RotaryEmbedding"), getattr(mod, p + "TopKRouter")
    with fc.swap_attributes([
        (rms, "forward", fc.patched_rms_forward),
        (rot, "forward", fc.make_rotary_forward(rot.forward, rope_f64)),
        (router, "forward", patched_mixtral_router_forward if family == "mixtral" else patched_topk_router_forward),
        (mod, "eager_attention_forward", fc.make_eager_attention(mod)),
        (mod, "load_balancing_loss_func", patched_load_balancing_loss_func),
    ]):
        yield


# --------------------------------------------------------------------------------------------------------------
# Model construction, weights, inputs
# --------------------------------------------------------------------------------------------------------------


def make_config(spec):
    fam = FAMILIES[spec["family"]]
    return fc.make_config(fam["config_cls"], fam["model_cls"], spec)


def is_norm_weight(name):
    return name.endswith("norm.weight")  # input/post_attention layernorm, q_norm, k_norm, model.norm


def build_model(spec, seed):
    model, _ = fc.build_random_model(FAMILIES[spec["family"]]["model_cls"], make_config(spec), seed,
                                     spec["weight_dtype"], is_norm_weight)
    model.eval()
    return model


def make_inputs(spec, seed):
    return fc.make_inputs(spec, seed, spec["config"].get("pad_token_id"), spec["pad_tokens_in_input"])


FAMILIES_BY_MODEL = {f["model_cls"]: f for f in FAMILIES.values()}


def moe_layer_ids(model):
    """The layers that actually hold a router in the built model."""
    fam = FAMILIES_BY_MODEL[type(model)]
    router_cls = getattr(fam["mod"], fam["prefix"] + "TopKRouter")
    return [i for i, layer in enumerate(model.model.layers) if isinstance(getattr(layer.mlp, "gate", None), router_cls)]


def moe_layer_ids_from_config(family, cfg):
    """The rule the decoder layers apply (Qwen*MoeDecoderLayer.__init__; OLMoE and Mixtral: every layer)."""
    if family in ("qwen3_moe", "qwen2_moe"):
        return [
            i
            for i in range(cfg.num_hidden_layers)
            if i not in cfg.mlp_only_layers and cfg.num_experts > 0 and (i + 1) % cfg.decoder_sparse_step == 0
        ]
    return list(range(cfg.num_hidden_layers))


def expert_width(family, cfg):
    return cfg.moe_intermediate_size if family in ("qwen3_moe", "qwen2_moe") else cfg.intermediate_size


# --------------------------------------------------------------------------------------------------------------
# In-memory (fused) names -> on-disk (per-expert) names
# --------------------------------------------------------------------------------------------------------------


def to_disk_names(family, named, I):
    """transformers 5.25 in-memory (fused experts) -> on-disk (save_pretrained, save_original_format=True) names:
      qwen3_moe/qwen2_moe/olmoe: mlp.experts.E.gate_proj.weight [I,H], .up_proj.weight [I,H], .down_proj.weight [H,I]
      mixtral: block_sparse_moe.experts.E.w1.weight (gate), .w3.weight (up), .w2.weight (down); and every other
               '.mlp.' (the router mlp.gate.weight) becomes '.block_sparse_moe.'."""
    if family == "mixtral":
        return fc.unfuse_experts(named, I, names=("w1", "w3", "w2"),
                                 rename=lambda n: n.replace(".mlp.", ".block_sparse_moe."))
    return fc.unfuse_experts(named, I)


# --------------------------------------------------------------------------------------------------------------
# Reference computation (transformers, patched, float64)
# --------------------------------------------------------------------------------------------------------------


def run_reference(spec, model32, input_ids, labels, attention_mask=None, want_grads=True):
    """float64 forward/backward through transformers' model with the dtype-faithful patches."""
    model = eager_copy(model32, torch.float64)
    params = list(model.named_parameters())
    with hf_float64_patches(spec["family"]):
        out = model(input_ids=input_ids, labels=labels, attention_mask=attention_mask, output_router_logits=True)
    logits = out.logits
    check(logits.dtype == torch.float64 and out.aux_loss.dtype == torch.float64, "reference is not float64")
    loss = causal_lm_loss(logits, labels)
    res = dict(
        logits=logits.detach(),
        loss=loss.detach(),
        aux=out.aux_loss.detach(),
        hf_total=out.loss.detach(),
        router_logits=tuple(r.detach() for r in out.router_logits),
        moe_layers=moe_layer_ids(model),
    )
    if want_grads:
        res["grads"] = grads_of(loss, params, retain=True)
        res["aux_grads"] = grads_of(out.aux_loss, params, retain=False)
    return res


def run_transformers(model, input_ids, labels, patched_family=None):
    """One forward/backward of a transformers model as it is (dtype and implementations already set)."""
    params = list(model.named_parameters())
    ctx = hf_float64_patches(patched_family) if patched_family else contextlib.nullcontext()
    with ctx:
        out = model(input_ids=input_ids, labels=labels, output_router_logits=True)
    return dict(
        logits=out.logits.detach(),
        total=out.loss.detach(),
        aux=out.aux_loss.detach(),
        router_logits=tuple(r.detach() for r in out.router_logits),
        grads=grads_of(out.loss, params, retain=True),
        aux_grads=grads_of(out.aux_loss, params, retain=False),
    )


def same_bits(a, b):
    keys = ["logits", "total", "aux"]
    ok = all(torch.equal(a[k], b[k]) for k in keys)
    ok = ok and all(torch.equal(x, y) for x, y in zip(a["router_logits"], b["router_logits"]))
    ok = ok and all(torch.equal(a["grads"][n], b["grads"][n]) for n in a["grads"])
    ok = ok and all(torch.equal(a["aux_grads"][n], b["aux_grads"][n]) for n in a["aux_grads"])
    return ok


def routing_gaps(router_logits, K):
    """Smallest float64 gap between the K-th and (K+1)-th softmax probability (what topk decides on)."""
    gap = float("inf")
    for rl in router_logits:
        p = F.softmax(rl.double(), dim=-1).sort(dim=-1, descending=True).values
        gap = min(gap, (p[:, K - 1] - p[:, K]).min().item())
    return gap


def topk_sets(router_logits, K):
    return [torch.topk(F.softmax(rl.double(), dim=-1), K, dim=-1).indices.sort(dim=-1).values for rl in router_logits]


def aux_formula(router_logits, E, K, attention_mask=None):
    """The load-balancing loss written out (README): pooled over all MoE layers and all (unmasked) rows."""
    counts = torch.zeros(E, dtype=torch.float64)
    probs = torch.zeros(E, dtype=torch.float64)
    rows = 0.0
    for rl in router_logits:
        p = F.softmax(rl, dim=-1)
        idx = torch.topk(p, K, dim=-1).indices
        if attention_mask is None:
            m = torch.ones(p.shape[0], dtype=torch.float64)
        else:
            m = attention_mask.reshape(-1).double()
        counts = counts + (F.one_hot(idx, E).double().sum(dim=1) * m[:, None]).sum(dim=0)
        probs = probs + (p * m[:, None]).sum(dim=0)
        rows = rows + m.sum()
    return E * torch.sum((counts / rows) * (probs / rows))


# --------------------------------------------------------------------------------------------------------------
# Independent plain-torch implementation of the four families, reading the on-disk (per-expert) tensors.
# This is the math of README-family-fixtures.md; it shares no code with transformers.
# --------------------------------------------------------------------------------------------------------------


def manual_forward(family, cfg, W, input_ids, clip_qkv=None):
    """W: on-disk names -> float64 leaf tensors. Returns logits, router logits per MoE layer."""
    B, T = input_ids.shape
    H, nq, nkv = cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads
    D = getattr(cfg, "head_dim", None) or H // nq
    eps = cfg.rms_norm_eps
    K = cfg.num_experts_per_tok
    mlp_key = "block_sparse_moe" if family == "mixtral" else "mlp"
    moe_layers = moe_layer_ids_from_config(family, cfg)

    def rms(x, w):
        return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))

    def lin(x, name):
        y = x @ W[name + ".weight"].T
        return y + W[name + ".bias"] if name + ".bias" in W else y

    def swiglu(x, g, u, d):
        return (F.silu(x @ W[g].T) * (x @ W[u].T)) @ W[d].T

    inv = 1.0 / (float(cfg.rope_parameters["rope_theta"]) ** (torch.arange(0, D, 2, dtype=torch.float64) / D))
    ang = torch.arange(T, dtype=torch.float64)[:, None] * inv[None, :]  # [T, D/2]
    cos, sin = torch.cat([ang, ang], -1).cos(), torch.cat([ang, ang], -1).sin()  # [T, D]

    def rope(x):  # x [B, heads, T, D]; rotate-half pairs (i, i + D/2)
        x1, x2 = x[..., : D // 2], x[..., D // 2 :]
        return x * cos + torch.cat([-x2, x1], -1) * sin

    emb = W["model.embed_tokens.weight"]
    pad = cfg.pad_token_id
    h = F.embedding(input_ids, emb, padding_idx=pad)  # padding_idx: that row gets no gradient from the lookup
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    router_logits = []
    for li in range(cfg.num_hidden_layers):
        L = f"model.layers.{li}"
        x = rms(h, W[f"{L}.input_layernorm.weight"])
        q, k, v = lin(x, f"{L}.self_attn.q_proj"), lin(x, f"{L}.self_attn.k_proj"), lin(x, f"{L}.self_attn.v_proj")
        if family == "olmoe":  # full width, before the head split; then the optional clamp
            q, k = rms(q, W[f"{L}.self_attn.q_norm.weight"]), rms(k, W[f"{L}.self_attn.k_norm.weight"])
            if clip_qkv is not None:
                q, k, v = q.clamp(-clip_qkv, clip_qkv), k.clamp(-clip_qkv, clip_qkv), v.clamp(-clip_qkv, clip_qkv)
        q, k, v = q.view(B, T, nq, D), k.view(B, T, nkv, D), v.view(B, T, nkv, D)
        if family == "qwen3_moe":  # per head, over head_dim
            q, k = rms(q, W[f"{L}.self_attn.q_norm.weight"]), rms(k, W[f"{L}.self_attn.k_norm.weight"])
        q, k, v = rope(q.transpose(1, 2)), rope(k.transpose(1, 2)), v.transpose(1, 2)
        g = nq // nkv
        k, v = k.repeat_interleave(g, dim=1), v.repeat_interleave(g, dim=1)  # query head j uses kv head j // g
        s = (q @ k.transpose(-1, -2)) * D**-0.5
        s = s.masked_fill(~causal, float("-inf"))
        a = (s.softmax(-1) @ v).transpose(1, 2).reshape(B, T, nq * D)
        h = h + lin(a, f"{L}.self_attn.o_proj")
        x = rms(h, W[f"{L}.post_attention_layernorm.weight"]).reshape(B * T, H)
        if li in moe_layers:
            P = f"{L}.{mlp_key}"
            rl = x @ W[f"{P}.gate.weight"].T
            router_logits.append(rl)
            prob = rl.softmax(-1)
            top_p, top_i = torch.topk(prob, K, dim=-1)
            if family == "mixtral" or cfg.norm_topk_prob:
                top_p = top_p / top_p.sum(-1, keepdim=True)
            y = torch.zeros_like(x)
            for e in range(W[f"{P}.gate.weight"].shape[0]):
                rows, slot = (top_i == e).nonzero(as_tuple=True)
                if rows.numel() == 0:
                    continue
                if family == "mixtral":
                    out_e = swiglu(x[rows], f"{P}.experts.{e}.w1.weight", f"{P}.experts.{e}.w3.weight",
                                   f"{P}.experts.{e}.w2.weight")
                else:
                    out_e = swiglu(x[rows], f"{P}.experts.{e}.gate_proj.weight", f"{P}.experts.{e}.up_proj.weight",
                                   f"{P}.experts.{e}.down_proj.weight")
                y = y.index_add(0, rows, out_e * top_p[rows, slot][:, None])
            if family == "qwen2_moe":
                gate = torch.sigmoid(x @ W[f"{P}.shared_expert_gate.weight"].T)  # [N, 1]
                y = y + gate * swiglu(x, f"{P}.shared_expert.gate_proj.weight", f"{P}.shared_expert.up_proj.weight",
                                      f"{P}.shared_expert.down_proj.weight")
        else:
            y = swiglu(x, f"{L}.mlp.gate_proj.weight", f"{L}.mlp.up_proj.weight", f"{L}.mlp.down_proj.weight")
        h = h + y.view(B, T, H)
    h = rms(h, W["model.norm.weight"])
    lm = W["lm_head.weight"] if "lm_head.weight" in W else emb
    return h @ lm.T, tuple(router_logits)


def manual_reference(family, cfg, disk, input_ids, labels, clip_qkv=None, want_grads=True):
    W = {k: v.detach().double().requires_grad_(True) for k, v in sorted(disk.items())}
    logits, rls = manual_forward(family, cfg, W, input_ids, clip_qkv=clip_qkv)
    loss = causal_lm_loss(logits, labels)
    aux = aux_formula(rls, cfg.num_experts if family != "mixtral" else cfg.num_local_experts, cfg.num_experts_per_tok)
    res = dict(logits=logits.detach(), loss=loss.detach(), aux=aux.detach(), router_logits=rls)
    if want_grads:
        params = list(W.items())
        res["grads"] = grads_of(loss, params, retain=True)
        res["aux_grads"] = grads_of(aux, params, retain=False)
    return res


# --------------------------------------------------------------------------------------------------------------
# Per-fixture driver
# --------------------------------------------------------------------------------------------------------------


def generate(spec, out_root, max_attempts=200):
    name, family = spec["name"], spec["family"]
    print(f"\n=== {name} ({family}): {spec['note']}")
    cfg = make_config(spec)
    K = cfg.num_experts_per_tok
    E = cfg.num_local_experts if family == "mixtral" else cfg.num_experts
    I = expert_width(family, cfg)

    # ---- deterministic retry schedule until every routing decision has a float64 margin > TIE_GAP ------------
    def attempt(seed):
        model32 = build_model(spec, seed)
        input_ids, labels = make_inputs(spec, seed)
        ref = run_reference(spec, model32, input_ids, labels)
        return {"min top-k gap": routing_gaps(ref["router_logits"], K)}, (model32, input_ids, labels, ref)

    seed, gaps, (model32, input_ids, labels, ref) = fc.first_tie_free_seed(spec, attempt, max_attempts)
    gap = gaps["min top-k gap"]
    moe_layers = ref["moe_layers"]
    print(f"  seed {seed}; MoE layers {moe_layers}; min top-{K} probability gap {gap:.4g}")
    check(moe_layers == moe_layer_ids_from_config(family, cfg), f"MoE layers {moe_layers} vs rule")
    check(len(ref["router_logits"]) == len(moe_layers), "one router_logits tensor per MoE layer")

    # ---- (1) RoPE: float64 inv_freq == transformers' float32 inv_freq, attention_scaling 1 -------------------
    inv64 = rope_inv_freq_f64(model32.config)
    rot = model32.model.rotary_emb
    check(torch.allclose(inv64.float(), rot.inv_freq, rtol=1e-6, atol=0), f"inv_freq {inv64} vs {rot.inv_freq}")
    check(rot.attention_scaling == 1.0, "default RoPE has attention_scaling 1")
    att = model32.model.layers[0].self_attn
    print(f"  head_dim {att.head_dim}, softmax scale {att.scaling:.12g}, kv groups {att.num_key_value_groups}, "
          f"rope inv_freq {[float(f'{x:.8g}') for x in inv64.tolist()]}")

    # ---- (2) the patched functions are bit-identical to transformers' for float32 (and bf16) ------------------
    pmask = torch.ones_like(input_ids)
    pmask[1, -3:] = 0  # right padding of row 1 (used for the masked aux-loss checks)
    for dt in [torch.float32] + ([torch.bfloat16] if spec["weight_dtype"] == "bfloat16" else []):
        plain = run_transformers(eager_copy(model32, dt), input_ids, labels)
        patched = run_transformers(eager_copy(model32, dt), input_ids, labels, patched_family=family)
        check(same_bits(plain, patched), f"patched != unpatched transformers in {dt}")
        lb_orig = FAMILIES[family]["mod"].load_balancing_loss_func(plain["router_logits"], E, K, pmask)
        lb_patched = patched_load_balancing_loss_func(plain["router_logits"], E, K, pmask)
        check(torch.equal(lb_orig, lb_patched), f"patched masked load_balancing_loss_func differs in {dt}")
        print(f"  {str(dt)[6:]}: patched == unpatched transformers, bitwise (logits, loss, aux_loss, router logits, "
              f"all grads and aux grads; eager attention + eager experts; masked aux loss)")

    # ---- (3) our float64 LM loss + coef * aux == transformers' own loss output; aux == the written formula ----
    coef = cfg.router_aux_loss_coef
    hf_total_expected = ref["loss"] + coef * ref["aux"]
    check(abs(ref["hf_total"].item() - hf_total_expected.item()) < 2e-6 * max(1.0, ref["loss"].item()),
          f"hf loss {ref['hf_total'].item()} vs {hf_total_expected.item()}")
    formula = aux_formula(ref["router_logits"], E, K)
    check(rel_err(formula, ref["aux"]) < 1e-13, f"aux formula {formula.item()} vs {ref['aux'].item()}")
    unpatched_lb = FAMILIES[family]["mod"].load_balancing_loss_func(ref["router_logits"], E, K, None)
    print(f"  aux formula == transformers' (patched) aux; unpatched load_balancing_loss_func on the same float64 "
          f"router logits (float32 accumulators) differs by rel {rel_err(unpatched_lb, ref['aux']):.2e}")

    # ---- (4) attention_mask: all ones == None; a padding mask follows the masked formula --------------------
    ones = torch.ones_like(input_ids)
    ref1 = run_reference(spec, model32, input_ids, labels, attention_mask=ones, want_grads=False)
    check(rel_err(ref1["aux"], ref["aux"]) < 1e-14 and rel_err(ref1["logits"], ref["logits"]) < 1e-14,
          "all-ones attention_mask differs from None")
    refm = run_reference(spec, model32, input_ids, labels, attention_mask=pmask, want_grads=False)
    fm = aux_formula(refm["router_logits"], E, K, attention_mask=pmask)
    check(rel_err(fm, refm["aux"]) < 1e-13, f"masked aux formula {fm.item()} vs {refm['aux'].item()}")
    print(f"  attention_mask: all-ones == None; with row 1's last 3 tokens masked transformers' aux "
          f"{refm['aux'].item():.10g} == masked formula (unmasked {ref['aux'].item():.10g})")

    # ---- (5) float64 reference vs completely unpatched float32 transformers (default sdpa + grouped_mm) ------
    m32 = copy.deepcopy(model32)
    impl = (m32.config._attn_implementation, m32.config._experts_implementation)
    fp32 = run_transformers(m32, input_ids, labels)
    ref_total_grads = {n: ref["grads"][n] + coef * ref["aux_grads"][n] for n in ref["grads"]}
    errs = {
        "logits": rel_err(fp32["logits"], ref["logits"]),
        "loss": rel_err(fp32["total"], hf_total_expected),
        "aux_loss": rel_err(fp32["aux"], ref["aux"]),
        "grads": max_rel_over(fp32["grads"], ref_total_grads),
        "auxgrads": max_rel_over(fp32["aux_grads"], ref["aux_grads"]),
    }
    sel_same = all(
        torch.equal(a, b) for a, b in zip(topk_sets(fp32["router_logits"], K), topk_sets(ref["router_logits"], K))
    )
    print(f"  unpatched float32 transformers ({impl[0]} attention, {impl[1]} experts) vs float64 reference, max rel: "
          + ", ".join(f"{k} {v:.2e}" for k, v in errs.items()) + f"; same experts selected: {sel_same}")
    check(sel_same, "float32 transformers selects different experts")
    check(errs["logits"] < 1e-4 and errs["loss"] < 1e-4 and errs["aux_loss"] < 1e-4, errs)
    check(errs["grads"] < 1e-3 and errs["auxgrads"] < 1e-3, errs)

    # ---- write with save_pretrained ----------------------------------------------------------------------------
    out_dir = fc.fresh_dir(out_root, name)
    to_save = copy.deepcopy(model32)
    if spec["weight_dtype"] == "bfloat16":
        to_save = to_save.to(torch.bfloat16)
    frac = fc.save_with_transformers(to_save, out_dir, spec["shards"], tmp_prefix="famfx_")
    written_cfg = json.load(open(os.path.join(out_dir, "config.json")))
    check(written_cfg["dtype"] == spec["weight_dtype"], f"config dtype {written_cfg.get('dtype')}")
    check(written_cfg["model_type"] == family, "model_type")

    # the files hold exactly the un-fused in-memory weights, bit for bit, in the per-expert naming
    disk, where = fc.check_written_weights(out_dir, to_save, lambda sd: to_disk_names(family, sd, I))
    dtypes = sorted({str(t.dtype)[6:] for t in disk.values()})
    print(f"  save_pretrained wrote {sorted(os.listdir(out_dir))}; {len(disk)} tensors, dtype {dtypes}"
          + (f", max_shard_size {frac} of total per shard" if frac else ""))
    show = [
        k for k in sorted(disk) if f"layers.{moe_layers[-1]}." in k and (".experts." not in k or ".experts.0." in k)
    ]
    for k in show:
        print(f"    {k} {list(disk[k].shape)}" + (f" -> {where[k]}" if spec["shards"] > 1 else ""))
    if spec["shards"] > 1:
        fc.check_shard_index(out_dir, where)

    fc.write_inputs(os.path.join(out_dir, "inputs.json"), input_ids, labels)

    expected = {
        "logits": ref["logits"].float().contiguous(),
        "loss": ref["loss"].reshape(1).float(),
        "aux_loss": ref["aux"].reshape(1).float(),
    }
    for k, v in to_disk_names(family, ref["grads"], I).items():
        expected["grad." + k] = v.float().contiguous()
    for k, v in to_disk_names(family, ref["aux_grads"], I).items():
        expected["auxgrad." + k] = v.float().contiguous()
    for layer, rl in zip(moe_layers, ref["router_logits"]):
        expected[f"topk_idx.{layer}"] = topk_sets((rl,), K)[0].float().contiguous()
    fc.save_expected(out_dir, expected)
    gnames = sorted(k[5:] for k in expected if k.startswith("grad."))
    anames = sorted(k[8:] for k in expected if k.startswith("auxgrad."))
    check(gnames == anames == sorted(disk), "every stored weight needs exactly one grad. and one auxgrad. entry")

    # ---- (6) independent plain-torch re-derivation from the written files (README math) -----------------------
    man = manual_reference(family, cfg, disk, input_ids, labels)
    ref_g = to_disk_names(family, ref["grads"], I)
    ref_a = to_disk_names(family, ref["aux_grads"], I)
    merr = dict(
        logits=rel_err(man["logits"], ref["logits"]),
        loss=rel_err(man["loss"], ref["loss"]),
        aux_loss=rel_err(man["aux"], ref["aux"]),
        grads=max_rel_over(man["grads"], ref_g),
        auxgrads=max_rel_over(man["aux_grads"], ref_a),
    )
    print("  independent float64 implementation from the written files vs reference, max rel: "
          + ", ".join(f"{k} {v:.1e}" for k, v in merr.items()))
    check(all(v < 1e-10 for v in merr.values()), merr)
    pad = cfg.pad_token_id
    if pad is not None and (input_ids == pad).any():
        row = ref_g["model.embed_tokens.weight"][pad]
        if cfg.tie_word_embeddings:
            # only the lm_head use of the tied matrix contributes: dL/dlogits[..., pad] summed against final hidden
            print(f"  pad_token_id {pad} occurs in input_ids; tied: its embedding-grad row is the lm_head part only "
                  f"(max |row| {row.abs().max().item():.3g})")
        else:
            check(torch.count_nonzero(row).item() == 0, "padding_idx row of the embedding grad is not zero")
            print(f"  pad_token_id {pad} occurs in input_ids; grad.model.embed_tokens.weight[{pad}] is exactly 0 "
                  f"(nn.Embedding padding_idx)")
        cfg_nopad = copy.deepcopy(cfg)
        cfg_nopad.pad_token_id = None
        man_np = manual_reference(family, cfg_nopad, disk, input_ids, labels)
        delta = man_np["grads"]["model.embed_tokens.weight"] - man["grads"]["model.embed_tokens.weight"]
        diff_rows = delta.abs().sum(-1).nonzero().flatten().tolist()
        check(diff_rows == [pad], f"padding_idx changes rows {diff_rows}")
        print(f"    (without padding_idx only row {pad} of that gradient would change)")

    # ---- (7) OLMoE clip_qkv: what it does if set (clamp q, k after their norms and v, before head split) ------
    if family == "olmoe":
        c = 0.6
        clipped = copy.deepcopy(model32)
        clipped.config.clip_qkv = c
        refc = run_reference(spec, clipped, input_ids, labels, want_grads=False)
        manc = manual_reference(family, cfg, disk, input_ids, labels, clip_qkv=c, want_grads=False)
        check(rel_err(manc["logits"], refc["logits"]) < 1e-10, "clip_qkv semantics")
        print(f"  clip_qkv={c} (check only, not in the fixture): transformers == clamp(q_norm(q)), clamp(k_norm(k)), "
              f"clamp(v) to [-{c}, {c}] before the head split; "
              f"logits change by rel {rel_err(refc['logits'], ref['logits']):.2e}")

    # ---- (8) round trip: transformers loads what was written and reproduces the reference ---------------------
    loaded = fc.check_round_trip(FAMILIES[family]["config_cls"], FAMILIES[family]["model_cls"], spec, out_dir, model32)
    ref2 = run_reference(spec, loaded, input_ids, labels, want_grads=False)
    check(torch.equal(ref2["logits"], ref["logits"]) and torch.equal(ref2["aux"], ref["aux"]), "reload logits")
    print("  round trip OK: from_pretrained gives the same config values, bit-identical weights and reference logits")

    print(f"  loss {ref['loss'].item():.10g}  aux_loss {ref['aux'].item():.10g}  "
          f"(transformers' total = loss + {coef} * aux_loss = {ref['hf_total'].item():.10g})")
    for layer, rl in zip(moe_layers, ref["router_logits"]):
        counts = torch.bincount(torch.topk(rl, K, dim=-1).indices.reshape(-1), minlength=E).tolist()
        print(f"  layer {layer} expert load {counts}")
    return dict(name=name, family=family, seed=seed, gap=gap, errs=errs)


def main():
    fc.run_generator(DEFAULT_OUT, FIXTURES, generate, MAX_BYTES,
                     summary_label=lambda r: f"{r['name']:34s} seed {r['seed']}  gap {r['gap']:.2e}")


if __name__ == "__main__":
    main()

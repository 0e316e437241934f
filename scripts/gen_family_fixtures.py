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

import argparse
import contextlib
import copy
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import warnings

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file

import transformers
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

warnings.filterwarnings("ignore")
transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()
logging.getLogger("transformers").setLevel(logging.ERROR)

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from family_fixture_specs import FIXTURES  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO_ROOT, "Tests", "Fixtures", "families")
TIE_GAP = 1e-4  # minimum float64 gap between the K-th and (K+1)-th router probability, every token and MoE layer
MAX_BYTES = 3 * 1024 * 1024

FAMILIES = {
    "qwen3_moe": dict(mod=m_qwen3, prefix="Qwen3Moe", config_cls=Qwen3MoeConfig, model_cls=Qwen3MoeForCausalLM),
    "qwen2_moe": dict(mod=m_qwen2, prefix="Qwen2Moe", config_cls=Qwen2MoeConfig, model_cls=Qwen2MoeForCausalLM),
    "olmoe": dict(mod=m_olmoe, prefix="Olmoe", config_cls=OlmoeConfig, model_cls=OlmoeForCausalLM),
    "mixtral": dict(mod=m_mixtral, prefix="Mixtral", config_cls=MixtralConfig, model_cls=MixtralForCausalLM),
}


def check(cond, msg):
    """A failed check stops the script (not an assert: it must also run under python -O)."""
    if not cond:
        raise SystemExit(f"CHECK FAILED: {msg}")


# --------------------------------------------------------------------------------------------------------------
# float64-faithful replacements of the transformers functions that force float32 intermediates.
# Each performs the original operations with compute dtype promote_types(input dtype, float32): for float32 and
# bf16 inputs that is float32, exactly as transformers does; for float64 inputs it is float64.
# --------------------------------------------------------------------------------------------------------------


def _cdt(dtype):
    return torch.promote_types(dtype, torch.float32)


def patched_rms_forward(self, hidden_states):
    # <Family>RMSNorm.forward (all four families share this code); original: .to(torch.float32)
    input_dtype = hidden_states.dtype
    hidden_states = hidden_states.to(_cdt(input_dtype))
    variance = hidden_states.pow(2).mean(-1, keepdim=True)
    hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
    return self.weight * hidden_states.to(input_dtype)


def rope_head_dim(config):
    # compute_default_rope_parameters: getattr(config, "head_dim", None) or hidden_size // num_attention_heads
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def rope_inv_freq_f64(config):
    """float64 re-derivation of compute_default_rope_parameters (which uses float32)."""
    check(config.rope_parameters["rope_type"] == "default", "only default RoPE is covered")
    base = float(config.rope_parameters["rope_theta"])
    dim = rope_head_dim(config)
    return 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))


def make_rotary_forward(orig):
    def forward(self, x, position_ids):
        if x.dtype != torch.float64:
            return orig(self, x, position_ids)  # transformers' own code, untouched
        check(self.rope_type == "default", "only default RoPE is covered")
        inv_freq = rope_inv_freq_f64(self.config).to(x.device)
        freqs = position_ids[..., None].to(torch.float64) * inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos() * self.attention_scaling, emb.sin() * self.attention_scaling

    return forward


def make_eager_attention(mod):
    def eager_attention_forward(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
        key_states = mod.repeat_kv(key, module.num_key_value_groups)
        value_states = mod.repeat_kv(value, module.num_key_value_groups)
        attn_weights = torch.matmul(query, key_states.transpose(2, 3)) * scaling
        if attention_mask is not None:
            attn_weights = attn_weights + attention_mask
        attn_weights = F.softmax(attn_weights, dim=-1, dtype=_cdt(query.dtype)).to(query.dtype)
        attn_weights = F.dropout(attn_weights, p=dropout, training=module.training)
        attn_output = torch.matmul(attn_weights, value_states)
        attn_output = attn_output.transpose(1, 2).contiguous()
        return attn_output, attn_weights

    return eager_attention_forward


def patched_topk_router_forward(self, hidden_states):
    # Qwen3MoeTopKRouter / Qwen2MoeTopKRouter / OlmoeTopKRouter.forward; original: softmax(dtype=torch.float)
    hidden_states = hidden_states.reshape(-1, self.hidden_dim)
    router_logits = F.linear(hidden_states, self.weight)
    router_probs = F.softmax(router_logits, dtype=_cdt(router_logits.dtype), dim=-1)
    router_top_value, router_indices = torch.topk(router_probs, self.top_k, dim=-1)
    if self.norm_topk_prob:
        router_top_value /= router_top_value.sum(dim=-1, keepdim=True)
    router_top_value = router_top_value.to(router_logits.dtype)
    return router_logits, router_top_value, router_indices


def patched_mixtral_router_forward(self, hidden_states):
    # MixtralTopKRouter.forward; original: softmax(router_logits.float()), weights returned in float32
    hidden_states = hidden_states.reshape(-1, self.hidden_dim)
    router_logits = F.linear(hidden_states, self.weight)
    router_probs = F.softmax(router_logits.to(_cdt(router_logits.dtype)), dim=-1)
    router_top_value, router_indices = torch.topk(router_probs, self.top_k, dim=-1)
    router_top_value /= router_top_value.sum(dim=-1, keepdim=True)
    return router_logits, router_top_value, router_indices


def patched_load_balancing_loss_func(gate_logits, num_experts=None, top_k=2, attention_mask=None):
    # load_balancing_loss_func (identical in the four modeling files); original: float32 accumulators
    if gate_logits is None or not isinstance(gate_logits, tuple):
        return 0
    compute_device = gate_logits[0].device
    acc = _cdt(gate_logits[0].dtype)
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
    fam = FAMILIES[family]
    mod, p = fam["mod"], fam["prefix"]
    rms, rot, router = getattr(mod, p + "RMSNorm"), getattr(mod, p + "RotaryEmbedding"), getattr(mod, p + "TopKRouter")
    saved = [
        (rms, "forward", rms.forward),
        (rot, "forward", rot.forward),
        (router, "forward", router.forward),
        (mod, "eager_attention_forward", mod.eager_attention_forward),
        (mod, "load_balancing_loss_func", mod.load_balancing_loss_func),
    ]
    try:
        rms.forward = patched_rms_forward
        rot.forward = make_rotary_forward(saved[1][2])
        router.forward = patched_mixtral_router_forward if family == "mixtral" else patched_topk_router_forward
        mod.eager_attention_forward = make_eager_attention(mod)
        mod.load_balancing_loss_func = patched_load_balancing_loss_func
        yield
    finally:
        for obj, attr, val in saved:
            setattr(obj, attr, val)


# --------------------------------------------------------------------------------------------------------------
# Model construction, weights, inputs
# --------------------------------------------------------------------------------------------------------------


def make_config(spec):
    fam = FAMILIES[spec["family"]]
    cfg = fam["config_cls"](**copy.deepcopy(spec["config"]))
    cfg.architectures = [fam["model_cls"].__name__]
    return cfg


def is_norm_weight(name):
    return name.endswith("norm.weight")  # input/post_attention layernorm, q_norm, k_norm, model.norm


def build_model(spec, seed):
    cfg = make_config(spec)
    torch.manual_seed(seed)
    model = FAMILIES[spec["family"]]["model_cls"](cfg).to(torch.float32)
    gen = torch.Generator().manual_seed(seed)
    std = cfg.initializer_range
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):  # a tied lm_head is deduplicated here
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
        check(model.lm_head.weight is model.model.embed_tokens.weight, "tied lm_head is not the embedding")
    model.eval()
    return model


def make_inputs(spec, seed):
    gen = torch.Generator().manual_seed(seed + 7)
    V, T = spec["config"]["vocab_size"], spec["seq_len"]
    input_ids = torch.randint(0, V, (2, T), generator=gen)
    pad = spec["config"].get("pad_token_id")
    input_ids[input_ids == (pad if pad is not None else -1)] = V - 1  # the pad id occurs only where placed
    if spec["pad_tokens_in_input"]:
        check(pad is not None, "pad_tokens_in_input needs pad_token_id")
        for i in range(spec["pad_tokens_in_input"]):
            input_ids[i % 2, 2 + 3 * i] = pad
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
    """transformers 5.25 keeps experts fused in memory: mlp.experts.gate_up_proj [E, 2I, H] (rows [0, I) = gate,
    rows [I, 2I) = up) and mlp.experts.down_proj [E, H, I]. On disk (save_pretrained, save_original_format=True):
      qwen3_moe/qwen2_moe/olmoe: mlp.experts.E.gate_proj.weight [I,H], .up_proj.weight [I,H], .down_proj.weight [H,I]
      mixtral: block_sparse_moe.experts.E.w1.weight (gate), .w3.weight (up), .w2.weight (down); and every other
               '.mlp.' (the router mlp.gate.weight) becomes '.block_sparse_moe.'."""
    out = {}
    for name, t in named.items():
        if name.endswith("mlp.experts.gate_up_proj"):
            prefix = name[: -len("gate_up_proj")]
            check(t.dim() == 3 and t.shape[1] == 2 * I, f"{name} shape {tuple(t.shape)}")
            for e in range(t.shape[0]):
                if family == "mixtral":
                    p = prefix.replace(".mlp.", ".block_sparse_moe.")
                    out[f"{p}{e}.w1.weight"] = t[e, :I, :].contiguous()
                    out[f"{p}{e}.w3.weight"] = t[e, I:, :].contiguous()
                else:
                    out[f"{prefix}{e}.gate_proj.weight"] = t[e, :I, :].contiguous()
                    out[f"{prefix}{e}.up_proj.weight"] = t[e, I:, :].contiguous()
        elif name.endswith("mlp.experts.down_proj"):
            prefix = name[: -len("down_proj")]
            check(t.dim() == 3 and t.shape[2] == I, f"{name} shape {tuple(t.shape)}")
            for e in range(t.shape[0]):
                if family == "mixtral":
                    out[f"{prefix.replace('.mlp.', '.block_sparse_moe.')}{e}.w2.weight"] = t[e].contiguous()
                else:
                    out[f"{prefix}{e}.down_proj.weight"] = t[e].contiguous()
        elif family == "mixtral" and ".mlp." in name:
            out[name.replace(".mlp.", ".block_sparse_moe.")] = t.contiguous()
        else:
            out[name] = t.contiguous()
    return out


# --------------------------------------------------------------------------------------------------------------
# Reference computation (transformers, patched, float64)
# --------------------------------------------------------------------------------------------------------------


def causal_lm_loss(logits, labels):
    """HF ForCausalLMLoss (no num_items_in_batch): mean CE of logits[:, t] vs labels[:, t+1] over labels != -100,
    here in the logits' dtype (HF casts the logits to float32 first)."""
    V = logits.shape[-1]
    return F.cross_entropy(
        logits[:, :-1, :].reshape(-1, V), labels[:, 1:].reshape(-1), ignore_index=-100, reduction="mean"
    )


def grads_of(value, params, retain):
    gs = torch.autograd.grad(value, [p for _, p in params], allow_unused=True, retain_graph=retain)
    return {n: (g if g is not None else torch.zeros_like(p)).detach() for (n, p), g in zip(params, gs)}


def eager_copy(model, dtype):
    m = copy.deepcopy(model).to(dtype)
    m.set_attn_implementation("eager")
    m.set_experts_implementation("eager")
    return m


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


def rel_err(a, b):
    a, b = a.double(), b.double()
    scale = max(b.abs().max().item(), 1e-30)
    return (a - b).abs().max().item() / scale


def max_rel_over(da, db):
    """max over tensors of max|a-b| / max|b| (tensors whose reference is all zero must be ~zero too)."""
    worst = 0.0
    for n in db:
        if db[n].abs().max().item() == 0.0:
            check(da[n].abs().max().item() < 1e-9, f"{n}: reference grad is zero, other is not")
            continue
        worst = max(worst, rel_err(da[n], db[n]))
    return worst


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
# Writing
# --------------------------------------------------------------------------------------------------------------


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def save_with_transformers(model_to_save, out_dir, shards):
    """model.save_pretrained(out_dir) as is; for shards > 1 a max_shard_size that yields exactly that many."""
    if shards == 1:
        model_to_save.save_pretrained(out_dir)
        check(os.path.exists(os.path.join(out_dir, "model.safetensors")), "no model.safetensors")
        return None
    total = sum(p.numel() * p.element_size() for p in model_to_save.parameters())
    want = [f"model-{i:05d}-of-{shards:05d}.safetensors" for i in range(1, shards + 1)]
    for frac in (0.5, 0.55, 0.6, 0.45, 0.65, 0.4, 0.7, 0.35, 0.3, 0.25):
        tmp = tempfile.mkdtemp(prefix="famfx_")
        try:
            model_to_save.save_pretrained(tmp, max_shard_size=int(total * frac / (shards - 1)))
            got = sorted(f for f in os.listdir(tmp) if f.endswith(".safetensors"))
            if got == want:
                for f in sorted(os.listdir(tmp)):
                    shutil.copy(os.path.join(tmp, f), os.path.join(out_dir, f))
                return frac
        finally:
            shutil.rmtree(tmp)
    raise SystemExit(f"CHECK FAILED: could not obtain exactly {shards} shards from save_pretrained")


def load_disk_weights(out_dir):
    files = sorted(f for f in os.listdir(out_dir) if f.endswith(".safetensors") and f != "expected.safetensors")
    res, where = {}, {}
    for fname in files:
        with safe_open(os.path.join(out_dir, fname), "pt") as f:
            check(f.metadata() == {"format": "pt"}, f"{fname} metadata {f.metadata()}")
            for k in f.keys():
                check(k not in res, f"{k} stored twice")
                res[k] = f.get_tensor(k)
                where[k] = fname
    return res, where


def write_inputs(path, input_ids, labels):
    with open(path, "w") as f:  # one row per line
        rows = lambda t: ",\n    ".join(json.dumps(r) for r in t.tolist())  # noqa: E731
        f.write(f'{{\n  "input_ids": [\n    {rows(input_ids)}\n  ],\n  "labels": [\n    {rows(labels)}\n  ]\n}}\n')
    check(json.load(open(path)) == {"input_ids": input_ids.tolist(), "labels": labels.tolist()}, "inputs.json")


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
    for attempt in range(max_attempts):
        seed = spec["seed"] + attempt
        model32 = build_model(spec, seed)
        input_ids, labels = make_inputs(spec, seed)
        ref = run_reference(spec, model32, input_ids, labels)
        gap = routing_gaps(ref["router_logits"], K)
        if gap > TIE_GAP:
            break
        print(f"  seed {seed}: routing near-tie (min top-k gap {gap:.3g}); retrying")
    else:
        raise SystemExit("CHECK FAILED: no tie-free seed found")
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
    out_dir = os.path.join(out_root, name)
    if os.path.exists(out_dir):
        shutil.rmtree(out_dir)
    os.makedirs(out_dir)
    to_save = copy.deepcopy(model32)
    if spec["weight_dtype"] == "bfloat16":
        to_save = to_save.to(torch.bfloat16)
    frac = save_with_transformers(to_save, out_dir, spec["shards"])
    written_cfg = json.load(open(os.path.join(out_dir, "config.json")))
    check(written_cfg["dtype"] == spec["weight_dtype"], f"config dtype {written_cfg.get('dtype')}")
    check(written_cfg["model_type"] == family, "model_type")

    # the files hold exactly the un-fused in-memory weights, bit for bit, in the per-expert naming
    disk, where = load_disk_weights(out_dir)
    sd = {n: t.detach() for n, t in to_save.state_dict().items()}
    if cfg.tie_word_embeddings:
        check("lm_head.weight" not in disk, "tied lm_head was written")
        sd.pop("lm_head.weight", None)
    mine = to_disk_names(family, sd, I)
    check(sorted(mine) == sorted(disk), f"names differ: {sorted(set(mine) ^ set(disk))[:8]}")
    for k in mine:
        check(disk[k].dtype == mine[k].dtype and torch.equal(disk[k], mine[k]), f"{k} differs on disk")
    dtypes = sorted({str(t.dtype)[6:] for t in disk.values()})
    print(f"  save_pretrained wrote {sorted(os.listdir(out_dir))}; {len(disk)} tensors, dtype {dtypes}"
          + (f", max_shard_size {frac} of total per shard" if frac else ""))
    show = [
        k for k in sorted(disk) if f"layers.{moe_layers[-1]}." in k and (".experts." not in k or ".experts.0." in k)
    ]
    for k in show:
        print(f"    {k} {list(disk[k].shape)}" + (f" -> {where[k]}" if spec["shards"] > 1 else ""))
    if spec["shards"] > 1:
        idx = json.load(open(os.path.join(out_dir, "model.safetensors.index.json")))
        check(idx["weight_map"] == where, "index weight_map does not match the shards")
        layer_files = {}
        for k, fname in where.items():
            layer_files.setdefault(".".join(k.split(".")[:3]), set()).add(fname)
        split = sorted(k for k, fs in layer_files.items() if len(fs) > 1)
        print(f"    index metadata {idx['metadata']}; layers whose tensors span both shards: {split}")

    write_inputs(os.path.join(out_dir, "inputs.json"), input_ids, labels)

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
    save_file(expected, os.path.join(out_dir, "expected.safetensors"), metadata={"format": "pt"})
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
    loaded_cfg = FAMILIES[family]["config_cls"].from_pretrained(out_dir)
    for k, v in spec["config"].items():
        got = getattr(loaded_cfg, k)
        if k == "rope_parameters":
            check(all(got[rk] == rv for rk, rv in v.items()), (k, got, v))
        else:
            check(got == v, (k, got, v))
    loaded = FAMILIES[family]["model_cls"].from_pretrained(out_dir, dtype=torch.float32)
    sd_mem, sd_disk = model32.state_dict(), loaded.state_dict()
    check(sorted(sd_mem) == sorted(sd_disk), "state_dict keys after from_pretrained")
    for k in sd_mem:
        check(torch.equal(sd_mem[k], sd_disk[k]), f"round-trip mismatch for {k}")
    if cfg.tie_word_embeddings:
        check(loaded.lm_head.weight is loaded.model.embed_tokens.weight, "from_pretrained did not tie")
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
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--only", nargs="*")
    args = ap.parse_args()
    print(f"python {sys.version.split()[0]}, torch {torch.__version__}, transformers {transformers.__version__}, "
          f"safetensors {__import__('safetensors').__version__}; threads {torch.get_num_threads()}")
    os.makedirs(args.out, exist_ok=True)
    results = []
    for spec in FIXTURES:
        if args.only and spec["name"] not in args.only:
            continue
        results.append(generate(spec, args.out))
    print("\nsummary (float32 unpatched transformers vs float64 reference, max relative differences):")
    for r in results:
        print(f"  {r['name']:34s} seed {r['seed']}  gap {r['gap']:.2e}  "
              + "  ".join(f"{k} {v:.1e}" for k, v in r["errs"].items()))
    total, digest = 0, hashlib.sha256()
    for root, dirs, files in os.walk(args.out):
        dirs.sort()
        for f in sorted(files):
            p = os.path.join(root, f)
            total += os.path.getsize(p)
            digest.update(os.path.relpath(p, args.out).encode())
            digest.update(open(p, "rb").read())
    print(f"total size of {args.out}: {total} bytes; sha256 of all files {digest.hexdigest()[:16]}")
    if not args.only:
        check(total < MAX_BYTES, f"fixtures are {total} bytes, more than {MAX_BYTES}")


if __name__ == "__main__":
    main()

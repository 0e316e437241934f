#!/usr/bin/env python3
"""Generate numerical reference fixtures for DeepSeek-V3 (model_type deepseek_v3, DeepseekV3ForCausalLM).

Usage:  python3 scripts/gen_v3_fixtures.py [--out Tests/Fixtures/v3] [--only NAME ...]

Requires: torch, transformers (written against 5.25.0), safetensors. CPU only, one thread.

For every fixture NAME (scripts/v3_fixture_specs.py) this writes Tests/Fixtures/v3/NAME/ with
  config.json, generation_config.json,   exactly as transformers' save_pretrained writes them
  model.safetensors or shards + index    (per-expert tensor names; F32, or BF16 with the router weight and the
                                         e_score_correction_bias buffer in F32, as transformers keeps them)
  inputs.json                            {"input_ids": [[...]], "labels": [[...]]}  (HF convention, -100 = ignore)
  expected.safetensors                   float32 values computed in float64 (see README-v3-fixtures.md):
                                         logits, loss, grad.<w>, topk_idx.<layer>, topk_weight.<layer>

The float64 reference is transformers' own DeepseekV3ForCausalLM (model.double(), eager attention, eager experts,
attention_mask=None). Transformers forces float32 in a few places even for a float64 model (RMSNorm, the RoPE
inverse frequencies and cos/sin, the attention softmax, the router: logits, sigmoid, bias add, group scores, weights,
and the LM loss). Inside this script only, those functions are replaced by versions doing the same operations in
promote_types(input dtype, float32), i.e. unchanged for float32 / bf16 inputs and float64 for float64 inputs. The
script checks that the patched model is bit-identical to the unpatched one in float32 (and bf16), compares the
float64 reference with the completely unpatched float32 model (sdpa attention, grouped_mm experts), re-derives
logits, routing and all gradients with an independent plain-torch implementation that reads the written
per-expert files (the math in README-v3-fixtures.md), and stops on the first failed check. Output is
deterministic: fixed seeds, fixed retry schedule.
"""

import contextlib
import copy
import json
import os
import shutil
import sys
import tempfile

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file

from transformers import DeepseekV3Config, DeepseekV3ForCausalLM
from transformers.models.deepseek_v2 import modeling_deepseek_v2 as mdv2
from transformers.models.deepseek_v3 import modeling_deepseek_v3 as mdv3

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fixture_common as fc  # noqa: E402  (helpers shared with the other fixture generators)
from fixture_common import (  # noqa: E402
    causal_lm_loss, check, compute_dtype, eager_copy, grads_of, max_rel_over, rel_err, yarn_mscale,
)
from v3_fixture_specs import FIXTURES  # noqa: E402

fc.setup()

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO_ROOT, "Tests", "Fixtures", "v3")
MAX_BYTES = 2 * 1024 * 1024
BIAS_NAME = "e_score_correction_bias"


# --------------------------------------------------------------------------------------------------------------
# float64-faithful replacements of the transformers functions that force float32 intermediates (the ones all
# families share are in fixture_common.py): compute dtype promote_types(input dtype, float32).
# --------------------------------------------------------------------------------------------------------------


def rope_params_f64(config):
    """float64 (inv_freq [dr/2], cos/sin factor) of DeepseekV3's default / YaRN RoPE. dim = qk_rope_head_dim
    (DeepseekV3Config sets head_dim = qk_rope_head_dim)."""
    dim = config.qk_rope_head_dim
    check(config.head_dim == dim, "DeepseekV3Config.head_dim must equal qk_rope_head_dim")
    return fc.rope_params_f64(config, dim)


def softmax_scale(config):
    """DeepseekV3Attention.scaling = yarn_apply_mscale(rope_parameters, qk_head_dim ** -0.5)."""
    s = (config.qk_nope_head_dim + config.qk_rope_head_dim) ** -0.5
    rp = config.rope_parameters
    if rp.get("rope_type", "default") != "default" and rp.get("mscale_all_dim", 0):
        m = yarn_mscale(rp["factor"], rp["mscale_all_dim"])
        s = s * m * m
    return s


def patched_router_forward(self, hidden_states):
    # DeepseekV3TopkRouter.forward; original: hidden_states.type(torch.float32), self.weight.type(torch.float32)
    hidden_states = hidden_states.view(-1, self.hidden_dim)
    dt = compute_dtype(hidden_states.dtype)
    router_logits = F.linear(hidden_states.type(dt), self.weight.type(dt))
    scores = router_logits.sigmoid()
    scores_for_choice = scores + self.e_score_correction_bias
    group_scores = (
        scores_for_choice.view(-1, self.num_group, self.num_experts // self.num_group)
        .topk(2, dim=-1)[0]
        .sum(dim=-1)
    )
    scores_for_choice = fc.mask_to_top_groups(self, scores_for_choice, group_scores, float("-inf"))
    topk_indices = torch.topk(scores_for_choice, k=self.top_k, dim=-1, sorted=False)[1]
    topk_weights = scores.gather(1, topk_indices)
    if self.norm_topk_prob:
        denominator = topk_weights.sum(dim=-1, keepdim=True) + 1e-20
        topk_weights /= denominator
    topk_weights = topk_weights * self.routed_scaling_factor
    return router_logits, topk_weights, topk_indices


@contextlib.contextmanager
def hf_float64_patches():
    """Install the float64-faithful functions into modeling_deepseek_v3 for the duration of the block."""
    rms, rot, router = mdv3.DeepseekV3RMSNorm, mdv3.DeepseekV3RotaryEmbedding, mdv3.DeepseekV3TopkRouter
    with fc.swap_attributes([
        (rms, "forward", fc.patched_rms_forward),
        (rot, "forward", fc.make_rotary_forward(rot.forward, lambda module: rope_params_f64(module.config))),
        (router, "forward", patched_router_forward),
        (mdv3, "eager_attention_forward", fc.make_eager_attention(mdv3)),
    ]):
        yield


# --------------------------------------------------------------------------------------------------------------
# Model construction, weights, inputs
# --------------------------------------------------------------------------------------------------------------


def make_config(spec):
    return fc.make_config(DeepseekV3Config, DeepseekV3ForCausalLM, spec)


def is_norm_weight(name):
    return name.endswith("norm.weight")  # input/post_attention layernorm, q_a/kv_a layernorm, model.norm


def is_router_weight(name):
    return name.endswith("mlp.gate.weight")  # kept float32 by transformers (_keep_in_fp32_modules_strict)


def build_model(spec, seed):
    """float32 model holding the fixture values. For a bf16 fixture every weight is rounded to bf16 except the
    router weight (transformers keeps it float32). The e_score_correction_bias buffers are float32, non-zero."""
    model, gen = fc.build_random_model(DeepseekV3ForCausalLM, make_config(spec), seed, spec["weight_dtype"],
                                       is_norm_weight, keep_float32=is_router_weight)
    with torch.no_grad():
        for name, b in sorted(model.named_buffers()):
            if name.endswith(BIAS_NAME):
                noise = torch.randn(b.shape, generator=gen, dtype=torch.float64)
                b.copy_((spec["bias_std"] * noise + spec["bias_offset"]).to(torch.float32))
    model.eval()
    return model


def transformers_bf16_model(model32):
    """The model as transformers builds it in bf16: _from_config(dtype=bfloat16) keeps mlp.gate.weight and
    e_score_correction_bias float32 (_keep_in_fp32_modules_strict); the values are copied from model32 exactly."""
    m = DeepseekV3ForCausalLM._from_config(copy.deepcopy(model32.config), dtype=torch.bfloat16)
    m.load_state_dict(model32.state_dict())
    for n, t in list(m.named_parameters()) + list(m.named_buffers()):
        if "rotary_emb" in n:
            continue
        want = torch.float32 if (is_router_weight(n) or n.endswith(BIAS_NAME)) else torch.bfloat16
        check(t.dtype == want, f"bf16 model: {n} is {t.dtype}, expected {want}")
    sd32 = model32.state_dict()
    for n, t in m.state_dict().items():
        check(torch.equal(t.float(), sd32[n]), f"bf16 model value of {n} is not exact")
    m.eval()
    return m


def moe_layer_ids(model):
    """The layers that actually hold a router in the built model."""
    return [i for i, layer in enumerate(model.model.layers) if isinstance(layer.mlp, mdv3.DeepseekV3MoE)]


def moe_layer_ids_from_config(cfg):
    """DeepseekV3DecoderLayer.__init__: MoE iff layer_idx >= first_k_dense_replace (no moe_layer_freq)."""
    return [i for i in range(cfg.num_hidden_layers) if i >= cfg.first_k_dense_replace]


# --------------------------------------------------------------------------------------------------------------
# In-memory (fused) names -> on-disk (per-expert) names
# --------------------------------------------------------------------------------------------------------------


def to_disk_names(named, I):
    """transformers 5.25 in-memory (fused experts) -> on-disk names (save_pretrained, save_original_format=True;
    deepseek_v3 uses the "qwen2_moe" conversion): mlp.experts.E.gate_proj.weight [I,H], .up_proj.weight [I,H],
    .down_proj.weight [H,I]. Everything else keeps its name."""
    return fc.unfuse_experts(named, I)


# --------------------------------------------------------------------------------------------------------------
# Running transformers
# --------------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def routing_hooks(model, store):
    """Record what every DeepseekV3TopkRouter returns: (router_logits, topk_weights, topk_indices), by layer."""
    hooks = []
    for i, layer in enumerate(model.model.layers):
        if isinstance(layer.mlp, mdv3.DeepseekV3MoE):
            def hook(mod, inp, out, i=i):
                store[i] = tuple(o.detach() for o in out)
            hooks.append(layer.mlp.gate.register_forward_hook(hook))
    try:
        yield
    finally:
        for h in hooks:
            h.remove()


def run_transformers(model, input_ids, labels, patched=False, attention_mask=None, own_loss=False,
                     want_grads=True):
    """One forward (and backward) of a transformers model as it is (dtype and implementations already set).
    own_loss: differentiate our causal_lm_loss in the logits' dtype (float64 reference) instead of out.loss."""
    params = list(model.named_parameters())
    routing = {}
    ctx = hf_float64_patches() if patched else contextlib.nullcontext()
    with ctx, routing_hooks(model, routing):
        out = model(input_ids=input_ids, labels=labels, attention_mask=attention_mask, output_router_logits=True)
    check(getattr(out, "aux_loss", None) is None, "DeepseekV3ForCausalLM returned an aux_loss")
    loss = causal_lm_loss(out.logits, labels) if own_loss else out.loss
    res = dict(
        logits=out.logits.detach(),
        hf_loss=out.loss.detach(),
        loss=loss.detach(),
        router_logits=tuple(r.detach() for r in out.router_logits),
        routing=routing,
        moe_layers=moe_layer_ids(model),
    )
    if want_grads:
        res["grads"] = grads_of(loss, params, retain=False)
    return res


def run_reference(model32, input_ids, labels, attention_mask=None, want_grads=True):
    """float64 forward/backward through transformers' model with the dtype-faithful patches."""
    model = eager_copy(model32, torch.float64)
    res = run_transformers(model, input_ids, labels, patched=True, attention_mask=attention_mask, own_loss=True,
                           want_grads=want_grads)
    check(res["logits"].dtype == torch.float64, "reference is not float64")
    check(all(r[1].dtype == torch.float64 for r in res["routing"].values()), "reference routing is not float64")
    return res


def same_bits(a, b):
    ok = torch.equal(a["logits"], b["logits"]) and torch.equal(a["hf_loss"], b["hf_loss"])
    ok = ok and all(torch.equal(x, y) for x, y in zip(a["router_logits"], b["router_logits"]))
    ok = ok and sorted(a["routing"]) == sorted(b["routing"])
    ok = ok and all(torch.equal(x, y) for L in a["routing"] for x, y in zip(a["routing"][L], b["routing"][L]))
    ok = ok and all(torch.equal(a["grads"][n], b["grads"][n]) for n in a["grads"])
    return ok


def sorted_routing(idx, w):
    """Rows sorted by ascending expert id; weights in the same order."""
    order = idx.argsort(dim=-1)
    return idx.gather(1, order), w.gather(1, order)


# --------------------------------------------------------------------------------------------------------------
# The V3 router written out (README), on float64 router logits; plus the variants an engine might get wrong
# --------------------------------------------------------------------------------------------------------------


def v3_route(rl, bias, cfg, use_bias=True, use_groups=True, group_rule="top2sum", masked_value=float("-inf")):
    """Returns (idx ascending, weights in that order, gap_k, gap_g). gap_k: K-th minus (K+1)-th biased candidate
    score (inf when the (K+1)-th is masked); gap_g: topk_group-th minus next group score (inf if no group step)."""
    N, E = rl.shape
    G, TG, K = cfg.n_group, cfg.topk_group, cfg.num_experts_per_tok
    s = torch.sigmoid(rl)
    b = s + bias if use_bias else s.clone()
    gap_g = float("inf")
    cand = b
    if use_groups and TG < G:
        grouped = b.view(N, G, E // G)
        if group_rule == "top2sum":
            gs = grouped.sort(dim=-1, descending=True).values[..., :2].sum(-1)
        else:  # DeepSeek-V2's rule: the best score of each group
            gs = grouped.max(dim=-1).values
        gsorted, gorder = gs.sort(dim=-1, descending=True)
        gap_g = (gsorted[:, TG - 1] - gsorted[:, TG]).min().item()
        keep = torch.zeros(N, G, dtype=torch.bool)
        keep.scatter_(1, gorder[:, :TG], True)
        cand = b.masked_fill(~keep.repeat_interleave(E // G, dim=1), masked_value)
    csorted = cand.sort(dim=-1, descending=True).values
    nxt = csorted[:, K]
    gaps = torch.where(torch.isinf(nxt), torch.full_like(nxt, float("inf")), csorted[:, K - 1] - nxt)
    gap_k = gaps.min().item()
    idx = cand.argsort(dim=-1, descending=True)[:, :K].sort(dim=-1).values
    w = s.gather(1, idx)
    if cfg.norm_topk_prob:
        w = w / (w.sum(-1, keepdim=True) + 1e-20)
    return idx, w * cfg.routed_scaling_factor, gap_k, gap_g


def routing_gaps(ref, biases, cfg):
    gk, gg = float("inf"), float("inf")
    for L, rl in zip(ref["moe_layers"], ref["router_logits"]):
        _, _, a, b = v3_route(rl.double(), biases[L].double(), cfg)
        gk, gg = min(gk, a), min(gg, b)
    return gk, gg


def router_biases(model):
    return {i: layer.mlp.gate.e_score_correction_bias.detach().clone() for i, layer in enumerate(model.model.layers)
            if isinstance(layer.mlp, mdv3.DeepseekV3MoE)}


# --------------------------------------------------------------------------------------------------------------
# Independent plain-torch implementation, reading the on-disk (per-expert) tensors. This is the math of
# README-v3-fixtures.md; it shares no code with transformers.
# --------------------------------------------------------------------------------------------------------------


def manual_forward(cfg, W, bias, input_ids, rope_pairs="config", latent_eps=1e-6):
    """W: on-disk weight names -> float64 leaf tensors; bias: layer -> float64 e_score_correction_bias (constant).
    rope_pairs: "config" follows cfg.rope_interleave; "v2" rotates adjacent pairs (2i, 2i+1) in place (DeepSeek-V2's
    view_as_complex rotation, output kept interleaved) to show it gives the same attention scores.
    latent_eps: the eps of q_a_layernorm / kv_a_layernorm, which DeepseekV3Attention builds with the RMSNorm
    default 1e-6, NOT config.rms_norm_eps. Returns logits and {layer: (idx ascending, weights)}."""
    B, T = input_ids.shape
    H, nh = cfg.hidden_size, cfg.num_attention_heads
    dn, dr, dv, kvr = cfg.qk_nope_head_dim, cfg.qk_rope_head_dim, cfg.v_head_dim, cfg.kv_lora_rank
    eps = cfg.rms_norm_eps
    K = cfg.num_experts_per_tok
    E = cfg.n_routed_experts

    def rms(x, w, e=eps):
        return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + e))

    def lin(x, name):
        y = x @ W[name + ".weight"].T
        return y + W[name + ".bias"] if name + ".bias" in W else y

    def swiglu(x, p):
        return (F.silu(x @ W[p + ".gate_proj.weight"].T) * (x @ W[p + ".up_proj.weight"].T)) @ W[p + ".down_proj.weight"].T

    inv, factor = rope_params_f64(cfg)
    ang = torch.arange(T, dtype=torch.float64)[:, None] * inv[None, :]  # [T, dr/2]
    c, s = ang.cos() * factor, ang.sin() * factor

    def rope(x):  # x [B, heads, T, dr]
        if rope_pairs == "v2":
            x1, x2 = x[..., 0::2], x[..., 1::2]
            return torch.stack([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1).flatten(-2)
        if cfg.rope_interleave:  # pairs (2i, 2i+1); output de-interleaved: [rotated evens | rotated odds]
            x1, x2 = x[..., 0::2], x[..., 1::2]
        else:  # rotate-half pairs (i, i + dr/2)
            x1, x2 = x[..., : dr // 2], x[..., dr // 2 :]
        return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1)

    scale = softmax_scale(cfg)
    h = W["model.embed_tokens.weight"][input_ids]
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    routing = {}
    for li in range(cfg.num_hidden_layers):
        L = f"model.layers.{li}"
        A = f"{L}.self_attn"
        x = rms(h, W[f"{L}.input_layernorm.weight"])
        if cfg.q_lora_rank is None:
            q = lin(x, f"{A}.q_proj")
        else:
            q = lin(rms(lin(x, f"{A}.q_a_proj"), W[f"{A}.q_a_layernorm.weight"], latent_eps), f"{A}.q_b_proj")
        q = q.view(B, T, nh, dn + dr).transpose(1, 2)
        q_pass, q_rot = q[..., :dn], q[..., dn:]
        ckv = lin(x, f"{A}.kv_a_proj_with_mqa")  # [B, T, kvr + dr]
        kv_lat = rms(ckv[..., :kvr], W[f"{A}.kv_a_layernorm.weight"], latent_eps)
        k_rot = ckv[..., kvr:][:, None]  # [B, 1, T, dr], one rope key shared by all heads
        kv = lin(kv_lat, f"{A}.kv_b_proj").view(B, T, nh, dn + dv).transpose(1, 2)
        k_nope, v = kv[..., :dn], kv[..., dn:]
        q_rot, k_rot = rope(q_rot), rope(k_rot)
        qf = torch.cat([q_pass, q_rot], -1)
        kf = torch.cat([k_nope, k_rot.expand(B, nh, T, dr)], -1)
        sc = (qf @ kf.transpose(-1, -2)) * scale
        sc = sc.masked_fill(~causal, float("-inf"))
        a = (sc.softmax(-1) @ v).transpose(1, 2).reshape(B, T, nh * dv)
        h = h + lin(a, f"{A}.o_proj")
        x = rms(h, W[f"{L}.post_attention_layernorm.weight"]).reshape(B * T, H)
        if li >= cfg.first_k_dense_replace:
            P = f"{L}.mlp"
            rl = x @ W[f"{P}.gate.weight"].T
            sg = torch.sigmoid(rl)
            choice = sg + bias[li]
            if cfg.topk_group < cfg.n_group:
                G = cfg.n_group
                gsc = choice.view(-1, G, E // G).topk(2, dim=-1).values.sum(-1)
                keep = torch.zeros_like(gsc, dtype=torch.bool)
                keep.scatter_(1, gsc.topk(cfg.topk_group, dim=-1).indices, True)
                choice = choice.masked_fill(~keep.repeat_interleave(E // G, dim=1), float("-inf"))
            top_i = choice.topk(K, dim=-1).indices
            top_w = sg.gather(1, top_i)
            if cfg.norm_topk_prob:
                top_w = top_w / (top_w.sum(-1, keepdim=True) + 1e-20)
            top_w = top_w * cfg.routed_scaling_factor
            routing[li] = sorted_routing(top_i, top_w)
            y = torch.zeros_like(x)
            for e in range(E):
                rows, slot = (top_i == e).nonzero(as_tuple=True)
                if rows.numel():
                    y = y.index_add(0, rows, swiglu(x[rows], f"{P}.experts.{e}") * top_w[rows, slot][:, None])
            y = y + swiglu(x, f"{P}.shared_experts")
        else:
            y = swiglu(x, f"{L}.mlp")
        h = h + y.view(B, T, H)
    h = rms(h, W["model.norm.weight"])
    lm = W["lm_head.weight"] if "lm_head.weight" in W else W["model.embed_tokens.weight"]
    return h @ lm.T, routing


def disk_bias(cfg, disk):
    return {li: disk[f"model.layers.{li}.mlp.gate.{BIAS_NAME}"].double() for li in moe_layer_ids_from_config(cfg)}


def manual_reference(cfg, disk, input_ids, labels, want_grads=True, rope_pairs="config", latent_eps=1e-6):
    W = {k: v.detach().double().requires_grad_(True) for k, v in sorted(disk.items()) if not k.endswith(BIAS_NAME)}
    logits, routing = manual_forward(cfg, W, disk_bias(cfg, disk), input_ids, rope_pairs=rope_pairs,
                                     latent_eps=latent_eps)
    loss = causal_lm_loss(logits, labels)
    res = dict(logits=logits.detach(), loss=loss.detach(), routing=routing)
    if want_grads:
        res["grads"] = grads_of(loss, list(W.items()), retain=False)
    return res


# --------------------------------------------------------------------------------------------------------------
# Extra checks that store nothing
# --------------------------------------------------------------------------------------------------------------


def check_interleave_vs_v2(cfg, model32):
    """transformers' apply_rotary_pos_emb_interleave vs (a) rotate_half on de-interleaved q/k and (b) DeepSeek-V2's
    view_as_complex rotation (mdv2.apply_rotary_emb), float32, with this fixture's cos/sin / inv_freq."""
    gen = torch.Generator().manual_seed(1234)
    B, nh, T, dr = 2, cfg.num_attention_heads, 9, cfg.qk_rope_head_dim
    q = torch.randn(B, nh, T, dr, generator=gen)
    k = torch.randn(B, 1, T, dr, generator=gen)
    pos = torch.arange(T)[None]
    rot = model32.model.rotary_emb
    cos, sin = rot(q, pos)
    q3, k3 = mdv3.apply_rotary_pos_emb_interleave(q, k, cos, sin)
    perm = torch.cat([torch.arange(0, dr, 2), torch.arange(1, dr, 2)])
    qh, kh = mdv3.apply_rotary_pos_emb(q[..., perm], k[..., perm], cos, sin)
    check(torch.equal(q3, qh) and torch.equal(k3, kh), "interleave != rotate_half on de-interleaved q/k")
    freqs = pos[..., None].float() * rot.inv_freq.float()  # DeepseekV2RotaryEmbedding.forward
    freqs_cis = torch.polar(torch.ones_like(freqs), freqs) * rot.attention_scaling
    q2, k2 = mdv2.apply_rotary_emb(q, k, freqs_cis)
    d_out = max((q3 - q2[..., perm]).abs().max().item(), (k3 - k2[..., perm]).abs().max().item())
    s3 = q3 @ k3.transpose(-1, -2)
    s2 = q2 @ k2.transpose(-1, -2)
    d_sc = rel_err(s3, s2)
    check(d_out < 1e-5 and d_sc < 1e-5, f"interleave vs V2 rotation: {d_out} {d_sc}")
    return d_out, d_sc


def check_bias_gets_no_grad(model32, input_ids, labels):
    """Even with requires_grad switched on, the bias only feeds topk (indices): autograd gives it no gradient."""
    m = eager_copy(model32, torch.float64)
    biases = [layer.mlp.gate.e_score_correction_bias for layer in m.model.layers
              if isinstance(layer.mlp, mdv3.DeepseekV3MoE)]
    for b in biases:
        b.requires_grad_(True)
    with hf_float64_patches():
        out = m(input_ids=input_ids, labels=labels)
    gs = torch.autograd.grad(causal_lm_loss(out.logits, labels), biases, allow_unused=True)
    check(all(g is None for g in gs), "e_score_correction_bias received a gradient")


def check_mtp_keys_ignored(cfg, out_dir, ref_logits, input_ids):
    """Add DeepSeek-V3 style MTP tensors at layer index num_hidden_layers (hub: model.layers.61.*) to a copy of the
    checkpoint: DeepseekV3ForCausalLM loads, reports them as unexpected, builds no MTP layer, same logits."""
    N = cfg.num_hidden_layers
    tmp = tempfile.mkdtemp(prefix="v3mtp_")
    try:
        for f in os.listdir(out_dir):
            if f != "expected.safetensors":
                shutil.copy(os.path.join(out_dir, f), os.path.join(tmp, f))
        path = os.path.join(tmp, "model.safetensors")
        with safe_open(path, "pt") as f:
            sd = {k: f.get_tensor(k) for k in f.keys()}
        last = f"model.layers.{N - 1}."
        H, V = cfg.hidden_size, cfg.vocab_size
        extra = {k.replace(last, f"model.layers.{N}."): v.clone() for k, v in sd.items() if k.startswith(last)}
        extra.update({
            f"model.layers.{N}.enorm.weight": torch.ones(H),
            f"model.layers.{N}.hnorm.weight": torch.ones(H),
            f"model.layers.{N}.eh_proj.weight": torch.zeros(H, 2 * H),
            f"model.layers.{N}.embed_tokens.weight": torch.zeros(V, H),
            f"model.layers.{N}.shared_head.norm.weight": torch.ones(H),
            f"model.layers.{N}.shared_head.head.weight": torch.zeros(V, H),
        })
        save_file({**sd, **extra}, path, metadata={"format": "pt"})
        m, info = DeepseekV3ForCausalLM.from_pretrained(tmp, dtype=torch.float32, output_loading_info=True)
        unexpected = sorted(info["unexpected_keys"])
        check(not info["missing_keys"], f"missing keys with MTP tensors: {info['missing_keys']}")
        check(unexpected and all(k.startswith(f"model.layers.{N}.") for k in unexpected), unexpected)
        check(len(m.model.layers) == N, "an MTP layer was built")
        ref = run_reference(m, input_ids, input_ids, want_grads=False)
        check(torch.equal(ref["logits"], ref_logits), "MTP tensors changed the logits")
        return len(unexpected)
    finally:
        shutil.rmtree(tmp)


def check_hub_config_spelling(spec, model32, input_ids, labels, ref_logits):
    """Hub DeepSeek-V3 config.json style: top-level rope_theta + rope_scaling {type: yarn, ...} and the extra
    fields topk_method / scoring_func / moe_layer_freq / ep_size. Transformers reads the rope into rope_parameters
    and ignores the extras (scoring_func 'softmax' or topk_method 'greedy' change nothing)."""
    c = {k: v for k, v in spec["config"].items() if k != "rope_parameters"}
    rp = dict(spec["config"]["rope_parameters"])
    c["rope_theta"] = rp.pop("rope_theta")
    rp["type"] = rp.pop("rope_type")
    c["rope_scaling"] = rp
    c.update(model_type="deepseek_v3", architectures=["DeepseekV3ForCausalLM"], topk_method="greedy",
             scoring_func="softmax", moe_layer_freq=2, ep_size=1, aux_loss_alpha=0.5, seq_aux=True)
    tmp = tempfile.mkdtemp(prefix="v3cfg_")
    try:
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(c, f)
        cfg = DeepseekV3Config.from_pretrained(tmp)
    finally:
        shutil.rmtree(tmp)
    want = spec["config"]["rope_parameters"]
    check(all(cfg.rope_parameters.get(k) == v for k, v in want.items()), (cfg.rope_parameters, want))
    m = DeepseekV3ForCausalLM(cfg)
    m.load_state_dict(model32.state_dict())  # parameters and the (persistent) bias buffers
    m.eval()
    ref = run_reference(m, input_ids, labels, want_grads=False)
    check(torch.equal(ref["logits"], ref_logits), "hub-style config gives different logits")


# --------------------------------------------------------------------------------------------------------------
# Per-fixture driver
# --------------------------------------------------------------------------------------------------------------


def generate(spec, out_root, max_attempts=200):
    name = spec["name"]
    print(f"\n=== {name}: {spec['note']}")
    cfg = make_config(spec)
    K, E, I = cfg.num_experts_per_tok, cfg.n_routed_experts, cfg.moe_intermediate_size
    G, TG = cfg.n_group, cfg.topk_group
    check(E % G == 0 and E // G >= 2, "each group needs >= 2 experts (group score = sum of the 2 best)")
    check(TG * (E // G) >= K, "the kept groups must hold at least K experts")
    check(cfg.num_key_value_heads == cfg.num_attention_heads, "MLA: num_key_value_heads must equal heads")
    check(I % 4 == 0, "expert width must be a multiple of 4 (grouped_mm stride limit)")

    # ---- deterministic retry schedule until every routing decision has a float64 margin > TIE_GAP ------------
    def attempt(seed):
        model32 = build_model(spec, seed)
        input_ids, labels = fc.make_inputs(spec, seed)
        ref = run_reference(model32, input_ids, labels)
        biases = router_biases(model32)
        gap_k, gap_g = routing_gaps(ref, biases, cfg)
        return {"min top-k gap": gap_k, "group gap": gap_g}, (model32, input_ids, labels, ref, biases)

    seed, gaps, (model32, input_ids, labels, ref, biases) = fc.first_tie_free_seed(spec, attempt, max_attempts)
    gap_k, gap_g = gaps["min top-k gap"], gaps["group gap"]
    moe_layers = ref["moe_layers"]
    print(f"  seed {seed}; MoE layers {moe_layers}; min top-{K} biased-score gap {gap_k:.4g}; "
          + (f"min top-{TG}-of-{G} group-score gap {gap_g:.4g}" if TG < G else f"no group step (n_group {G}, "
             f"topk_group {TG})"))
    check(moe_layers == moe_layer_ids_from_config(cfg), f"MoE layers {moe_layers} vs rule")
    check(len(ref["router_logits"]) == len(moe_layers), "one router_logits tensor per MoE layer")
    check(sorted(ref["routing"]) == moe_layers, "one routing record per MoE layer")

    # ---- (1) RoPE and softmax scale: float64 re-derivation == transformers' values ---------------------------
    inv64, fac64 = rope_params_f64(model32.config)
    rot = model32.model.rotary_emb
    check(torch.allclose(inv64.float(), rot.inv_freq, rtol=1e-6, atol=0), f"inv_freq {inv64} vs {rot.inv_freq}")
    check(fac64 == rot.attention_scaling, f"attention factor {fac64} vs {rot.attention_scaling}")
    att = model32.model.layers[0].self_attn
    check(abs(att.scaling - softmax_scale(cfg)) <= 1e-15 * att.scaling, f"softmax scale {att.scaling}")
    print(f"  rope ({cfg.rope_parameters['rope_type']}, interleave {cfg.rope_interleave}) dim {cfg.qk_rope_head_dim}: "
          f"inv_freq {[float(f'{x:.8g}') for x in inv64.tolist()]}, cos/sin factor {fac64:.12g}; softmax scale "
          f"{att.scaling:.12g} (qk_head_dim^-0.5 = {(cfg.qk_nope_head_dim + cfg.qk_rope_head_dim) ** -0.5:.12g})")

    # ---- (2) the patched functions are bit-identical to transformers' for float32 (and bf16) ------------------
    variants = [("float32", eager_copy(model32))]
    if spec["weight_dtype"] == "bfloat16":
        variants.append(("bfloat16 (router weight and bias float32)", eager_copy(transformers_bf16_model(model32))))
    for label, m in variants:
        plain = run_transformers(copy.deepcopy(m), input_ids, labels)
        patched = run_transformers(copy.deepcopy(m), input_ids, labels, patched=True)
        check(same_bits(plain, patched), f"patched != unpatched transformers in {label}")
        print(f"  {label}: patched == unpatched transformers, bitwise (logits, loss, router logits, routing weights "
              f"and ids, all grads; eager attention + eager experts)")

    # ---- (3) transformers' routing == the README router; our float64 loss == transformers' loss --------------
    for L, rl in zip(moe_layers, ref["router_logits"]):
        r_logits, r_w, r_idx = ref["routing"][L]
        check(torch.equal(r_logits, rl), "router_logits output == router output 0")
        i_hf, w_hf = sorted_routing(r_idx, r_w)
        i_me, w_me, _, _ = v3_route(rl, biases[L].double(), cfg)
        check(torch.equal(i_hf, i_me), f"layer {L}: README router selects other experts")
        check(rel_err(w_me, w_hf) < 1e-14, f"layer {L}: README router weights differ")
    check(abs(ref["hf_loss"].item() - ref["loss"].item()) < 2e-6 * max(1.0, ref["loss"].item()),
          f"hf loss {ref['hf_loss'].item()} vs {ref['loss'].item()}")
    print(f"  transformers' routing == README router (ids exact, weights < 1e-14); no aux_loss (None) with "
          f"output_router_logits=True; transformers' loss (float32 CE) {ref['hf_loss'].item():.10g} vs float64 "
          f"{ref['loss'].item():.10g}")

    # ---- (4) coverage: the bias, the group step and its top-2-sum rule all change some decisions --------------
    cov = dict(no_bias=0, no_groups=0, group_max=0, masked_zero=0, rows=0)
    neg = 0
    for L, rl in zip(moe_layers, ref["router_logits"]):
        bL = biases[L].double()
        idx, _, _, _ = v3_route(rl, bL, cfg)
        cov["rows"] += idx.shape[0]
        diff = lambda other: int((other != idx).any(-1).sum())  # noqa: E731
        cov["no_bias"] += diff(v3_route(rl, bL, cfg, use_bias=False)[0])
        cov["no_groups"] += diff(v3_route(rl, bL, cfg, use_groups=False)[0])
        cov["group_max"] += diff(v3_route(rl, bL, cfg, group_rule="max")[0])
        cov["masked_zero"] += diff(v3_route(rl, bL, cfg, masked_value=0.0)[0])
        neg += int((torch.sigmoid(rl) + bL < 0).sum())
    print(f"  rows (of {cov['rows']}) whose expert set changes if an engine: ignores the bias {cov['no_bias']}; "
          f"skips the group step {cov['no_groups']}; ranks groups by their max (V2) {cov['group_max']}; "
          f"masks with 0.0 instead of -inf (V2) {cov['masked_zero']}; negative biased scores: {neg}")
    check(cov["no_bias"] > 0, "the correction bias changes no decision")
    if TG < G:
        check(cov["no_groups"] > 0 and cov["group_max"] > 0, "the group step / top-2-sum rule changes nothing")
    if spec["bias_offset"] < 0:
        check(cov["masked_zero"] > 0, "masking with 0.0 would change nothing")

    # ---- (5) float64 reference vs completely unpatched float32 transformers (default sdpa + grouped_mm) ------
    m32 = copy.deepcopy(model32)
    impl = (m32.config._attn_implementation, m32.config._experts_implementation)
    fp32 = run_transformers(m32, input_ids, labels)
    tw32 = {L: sorted_routing(fp32["routing"][L][2], fp32["routing"][L][1]) for L in moe_layers}
    tw64 = {L: sorted_routing(ref["routing"][L][2], ref["routing"][L][1]) for L in moe_layers}
    sel_same = all(torch.equal(tw32[L][0], tw64[L][0]) for L in moe_layers)
    check(sel_same, "float32 transformers selects different experts")
    errs = {
        "logits": rel_err(fp32["logits"], ref["logits"]),
        "loss": rel_err(fp32["loss"], ref["loss"]),
        "topk_weight": max(rel_err(tw32[L][1], tw64[L][1]) for L in moe_layers),
        "grads": max_rel_over(fp32["grads"], ref["grads"]),
    }
    print(f"  unpatched float32 transformers ({impl[0]} attention, {impl[1]} experts) vs float64 reference, max rel: "
          + ", ".join(f"{k} {v:.2e}" for k, v in errs.items()) + f"; same experts selected: {sel_same}")
    check(errs["logits"] < 1e-4 and errs["loss"] < 1e-4 and errs["topk_weight"] < 1e-4, errs)
    check(errs["grads"] < 1e-3, errs)

    # ---- (6) attention_mask all ones == None ----------------------------------------------------------------
    ref1 = run_reference(model32, input_ids, labels, attention_mask=torch.ones_like(input_ids), want_grads=False)
    check(rel_err(ref1["logits"], ref["logits"]) < 1e-14, "all-ones attention_mask differs from None")

    # ---- write with save_pretrained ----------------------------------------------------------------------------
    out_dir = fc.fresh_dir(out_root, name)
    to_save = transformers_bf16_model(model32) if spec["weight_dtype"] == "bfloat16" else copy.deepcopy(model32)
    frac = fc.save_with_transformers(to_save, out_dir, spec["shards"], tmp_prefix="v3fx_")
    written_cfg = json.load(open(os.path.join(out_dir, "config.json")))
    check(written_cfg["dtype"] == spec["weight_dtype"], f"config dtype {written_cfg.get('dtype')}")
    check(written_cfg["model_type"] == "deepseek_v3", "model_type")

    # the files hold exactly the un-fused in-memory tensors (parameters and the bias buffer), bit for bit
    disk, where = fc.check_written_weights(out_dir, to_save, lambda sd: to_disk_names(sd, I))
    for k in disk:
        want = torch.float32 if (spec["weight_dtype"] == "float32" or is_router_weight(k) or k.endswith(BIAS_NAME)) \
            else torch.bfloat16
        check(disk[k].dtype == want, f"{k} stored as {disk[k].dtype}, expected {want}")
    bias_keys = sorted(k for k in disk if k.endswith(BIAS_NAME))
    check(bias_keys == [f"model.layers.{L}.mlp.gate.{BIAS_NAME}" for L in moe_layers], bias_keys)
    param_names = set(to_disk_names(dict(model32.named_parameters()), I))
    check(not any(k.endswith(BIAS_NAME) for k in param_names), "the bias is a parameter")
    check(param_names == set(disk) - set(bias_keys), "stored tensors = parameters + bias buffers")
    for L in moe_layers:
        gate = model32.model.layers[L].mlp.gate
        check(BIAS_NAME in gate._buffers and BIAS_NAME not in gate._non_persistent_buffers_set, "persistent buffer")
        check(not gate.e_score_correction_bias.requires_grad, "bias requires grad")
        check(torch.count_nonzero(disk[f"model.layers.{L}.mlp.gate.{BIAS_NAME}"]).item() == E, "bias has zeros")
    check_bias_gets_no_grad(model32, input_ids, labels)
    dtypes = sorted({str(t.dtype)[6:] for t in disk.values()})
    print(f"  save_pretrained wrote {sorted(os.listdir(out_dir))}; {len(disk)} tensors "
          f"({len(bias_keys)} of them the e_score_correction_bias buffers), dtype {dtypes}"
          + (f", max_shard_size {frac} of total per shard" if frac else ""))
    show = [k for k in sorted(disk) if f"layers.{moe_layers[-1]}." in k and (".experts." not in k or ".experts.0." in k)]
    for k in show:
        print(f"    {k} {list(disk[k].shape)} {str(disk[k].dtype)[6:]}" + (f" -> {where[k]}" if spec["shards"] > 1 else ""))
    if spec["shards"] > 1:
        fc.check_shard_index(out_dir, where)

    fc.write_inputs(os.path.join(out_dir, "inputs.json"), input_ids, labels)

    expected = {"logits": ref["logits"].float().contiguous(), "loss": ref["loss"].reshape(1).float()}
    for k, v in to_disk_names(ref["grads"], I).items():
        expected["grad." + k] = v.float().contiguous()
    for L in moe_layers:
        i_s, w_s = tw64[L]
        expected[f"topk_idx.{L}"] = i_s.float().contiguous()
        expected[f"topk_weight.{L}"] = w_s.float().contiguous()
    fc.save_expected(out_dir, expected)
    gnames = sorted(k[5:] for k in expected if k.startswith("grad."))
    check(gnames == sorted(param_names), "every stored weight (not the bias buffer) needs exactly one grad. entry")

    # ---- (7) independent plain-torch re-derivation from the written files (README math) -----------------------
    man = manual_reference(cfg, disk, input_ids, labels)
    ref_g = to_disk_names(ref["grads"], I)
    merr = dict(
        logits=rel_err(man["logits"], ref["logits"]),
        loss=rel_err(man["loss"], ref["loss"]),
        grads=max_rel_over(man["grads"], ref_g),
        topk_weight=max(rel_err(man["routing"][L][1], tw64[L][1]) for L in moe_layers),
    )
    check(all(torch.equal(man["routing"][L][0], tw64[L][0]) for L in moe_layers), "manual routing ids differ")
    print("  independent float64 implementation from the written files vs reference, max rel: "
          + ", ".join(f"{k} {v:.1e}" for k, v in merr.items()) + "; same expert ids")
    check(all(v < 1e-13 for v in merr.values()), merr)
    if cfg.rope_interleave:
        man2 = manual_reference(cfg, disk, input_ids, labels, want_grads=False, rope_pairs="v2")
        d2 = rel_err(man2["logits"], man["logits"])
        check(d2 < 1e-12, f"V2 pair rotation gives different logits: {d2}")
        print(f"  rope_interleave: DeepSeek-V2's in-place adjacent-pair rotation gives the same logits (rel {d2:.1e})")
    flipped = copy.deepcopy(cfg)
    flipped.rope_interleave = not cfg.rope_interleave
    manf = manual_reference(flipped, disk, input_ids, labels, want_grads=False)
    print(f"  (flipping rope_interleave would change the logits by rel {rel_err(manf['logits'], ref['logits']):.2e})")
    if cfg.rms_norm_eps != 1e-6:
        mane = manual_reference(cfg, disk, input_ids, labels, want_grads=False, latent_eps=cfg.rms_norm_eps)
        print(f"  q_a/kv_a_layernorm use eps 1e-6, not rms_norm_eps {cfg.rms_norm_eps}: using rms_norm_eps there "
              f"would change the logits by rel {rel_err(mane['logits'], ref['logits']):.2e}")
    d_out, d_sc = check_interleave_vs_v2(cfg, model32)
    print(f"  float32: apply_rotary_pos_emb_interleave == rotate_half on [evens | odds] bitwise; == V2 "
          f"apply_rotary_emb output permuted [evens | odds] (max abs diff {d_out:.1e}); q.k scores rel {d_sc:.1e}")

    # ---- (8) round trip: transformers loads what was written and reproduces the reference ---------------------
    loaded = fc.check_round_trip(DeepseekV3Config, DeepseekV3ForCausalLM, spec, out_dir, model32)
    ref2 = run_reference(loaded, input_ids, labels, want_grads=False)
    check(torch.equal(ref2["logits"], ref["logits"]), "reload logits")
    if spec["weight_dtype"] == "bfloat16":
        lb = DeepseekV3ForCausalLM.from_pretrained(out_dir)  # dtype from config.json
        g = lb.model.layers[moe_layers[0]].mlp.gate
        check(lb.model.embed_tokens.weight.dtype == torch.bfloat16 and g.weight.dtype == torch.float32
              and g.e_score_correction_bias.dtype == torch.float32, "bf16 load dtypes")
    print("  round trip OK: from_pretrained gives the same config values, bit-identical weights and bias, and "
          "reference logits")

    # ---- (9) MTP tensors in a checkpoint are ignored; hub config spelling is read the same --------------------
    if spec["shards"] == 1:
        n_unexp = check_mtp_keys_ignored(cfg, out_dir, ref["logits"], input_ids)
        print(f"  MTP-style tensors at model.layers.{cfg.num_hidden_layers}.* (enorm, hnorm, eh_proj, shared_head.*, "
              f"embed_tokens, a full decoder layer): loaded with {n_unexp} unexpected keys, no MTP layer built, same "
              f"logits (num_nextn_predict_layers = {cfg.num_mtp_layers})")
    if cfg.rope_parameters["rope_type"] == "yarn":
        check_hub_config_spelling(spec, model32, input_ids, labels, ref["logits"])
        print("  hub spelling (rope_theta + rope_scaling{type: yarn}, plus topk_method 'greedy', scoring_func "
              "'softmax', moe_layer_freq 2, aux_loss_alpha, seq_aux): same rope_parameters, bit-identical logits")

    print(f"  loss {ref['loss'].item():.10g}")
    for L in moe_layers:
        counts = torch.bincount(tw64[L][0].reshape(-1), minlength=E).tolist()
        print(f"  layer {L} expert load {counts}")
    return dict(name=name, seed=seed, gap_k=gap_k, gap_g=gap_g, errs=errs)


def main():
    check(DeepseekV3ForCausalLM._keys_to_ignore_on_load_unexpected == [r"model\.layers\.61.*"],
          "DeepseekV3 MTP ignore pattern changed")
    fc.run_generator(DEFAULT_OUT, FIXTURES, generate, MAX_BYTES, summary_label=lambda r: (
        f"{r['name']:38s} seed {r['seed']}  gaps {r['gap_k']:.2e}/{r['gap_g']:.2e}"))


if __name__ == "__main__":
    main()

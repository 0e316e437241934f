"""Float64 and DeepSeek-semantics patches applied to transformers' DeepseekV2 while generating fixtures
(see scripts/README-fixtures.md): the router renormalises when norm_topk_prob is set, records routing, and
RMSNorm, RoPE, the router softmax and attention run in float64. Used only by gen_model_fixtures.py."""

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

# --------------------------------------------------------------------------------------------------------------
# float64-faithful replacements for the few transformers functions that force float32 intermediates
# --------------------------------------------------------------------------------------------------------------

ROUTER_RECORDS = []  # filled by the patched router: one dict per MoE layer call, in layer order

_ORIG = dict(
    router_forward=mdv2.DeepseekV2TopkRouter.forward,
    rms_forward=mdv2.DeepseekV2RMSNorm.forward,
    rotary_forward=mdv2.DeepseekV2RotaryEmbedding.forward,
    apply_rotary_emb=mdv2.apply_rotary_emb,
    eager_attention_forward=mdv2.eager_attention_forward,
)


def _compute_dtype(dtype):
    """float32 for float32/bf16/fp16 inputs (exactly what transformers does), float64 for float64 inputs."""
    return torch.promote_types(dtype, torch.float32)


def patched_router_forward(self, hidden_states):
    """transformers 5.23 DeepseekV2TopkRouter.forward + DeepSeek's norm_topk_prob + score recording.

    For float32 input and norm_topk_prob=False this performs exactly the operations of the original."""
    batch_shape = hidden_states.shape[:-1]
    hidden_states = hidden_states.view(-1, self.hidden_dim)
    dt = _compute_dtype(hidden_states.dtype)
    router_logits = F.linear(hidden_states.type(dt), self.weight.type(dt))
    scores = router_logits.softmax(dim=-1, dtype=dt)
    full_scores = scores  # before any group masking (used by the aux loss)
    group_scores = None
    if self.topk_method == "greedy":
        topk_weights, topk_indices = torch.topk(scores, k=self.top_k, dim=-1, sorted=False)
    elif self.topk_method == "group_limited_greedy":
        group_scores = scores.view(-1, self.num_group, self.num_experts // self.num_group).max(dim=-1).values
        group_idx = torch.topk(group_scores, k=self.topk_group, dim=-1, sorted=False)[1]
        group_mask = torch.zeros_like(group_scores)
        group_mask.scatter_(1, group_idx, 1)
        score_mask = (
            group_mask.unsqueeze(-1)
            .expand(-1, self.num_group, self.num_experts // self.num_group)
            .reshape(-1, self.num_experts)
        )
        scores = scores.masked_fill(~score_mask.bool(), 0.0)
        topk_weights, topk_indices = torch.topk(scores, k=self.top_k, dim=-1, sorted=False)
    else:
        raise ValueError(self.topk_method)
    if getattr(self, "fixture_norm_topk_prob", False) and self.top_k > 1:
        topk_weights = topk_weights / (topk_weights.sum(dim=-1, keepdim=True) + 1e-20)
    topk_weights = topk_weights * self.routed_scaling_factor
    ROUTER_RECORDS.append(
        dict(
            batch_shape=tuple(batch_shape),
            scores=full_scores,
            candidate_scores=scores,
            group_scores=group_scores,
            topk_indices=topk_indices,
            router=self,
        )
    )
    return router_logits, topk_weights, topk_indices


def patched_rms_forward(self, hidden_states):
    input_dtype = hidden_states.dtype
    hidden_states = hidden_states.to(_compute_dtype(input_dtype))
    variance = hidden_states.pow(2).mean(-1, keepdim=True)
    hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
    return self.weight * hidden_states.to(input_dtype)


def rope_inv_freq_f64(config):
    """float64 re-derivation of transformers' default / YaRN inverse frequencies and cos/sin attention factor
    (modeling_rope_utils._compute_yarn_parameters, truncate=True). Checked against transformers below."""
    rp = config.rope_parameters
    base = float(rp["rope_theta"])
    dim = config.qk_rope_head_dim
    pos_freqs = base ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    if rp["rope_type"] == "default":
        return 1.0 / pos_freqs, 1.0
    assert rp["rope_type"] == "yarn"
    factor = float(rp["factor"])
    orig = rp["original_max_position_embeddings"]
    mscale, mscale_all_dim = rp.get("mscale"), rp.get("mscale_all_dim")

    def get_mscale(scale, m=1.0):
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    if mscale and mscale_all_dim:
        attention_factor = get_mscale(factor, mscale) / get_mscale(factor, mscale_all_dim)
    else:
        attention_factor = get_mscale(factor)
    beta_fast = rp.get("beta_fast") or 32
    beta_slow = rp.get("beta_slow") or 1

    def corr_dim(num_rot):
        return (dim * math.log(orig / (num_rot * 2 * math.pi))) / (2 * math.log(base))

    low = max(math.floor(corr_dim(beta_fast)), 0)
    high = min(math.ceil(corr_dim(beta_slow)), dim - 1)
    if low == high:
        high += 0.001
    ramp = ((torch.arange(dim // 2, dtype=torch.float64) - low) / (high - low)).clamp(0, 1)
    extrap_factor = 1 - ramp
    inv_freq = (1.0 / (factor * pos_freqs)) * (1 - extrap_factor) + (1.0 / pos_freqs) * extrap_factor
    return inv_freq, attention_factor


def patched_rotary_forward(self, x, position_ids):
    if x.dtype != torch.float64:
        return _ORIG["rotary_forward"](self, x, position_ids)
    inv_freq, attention_factor = rope_inv_freq_f64(self.config)
    freqs = position_ids[..., None].to(torch.float64) * inv_freq.to(x.device)
    freqs_cis = torch.polar(torch.ones_like(freqs), freqs)  # complex128
    return freqs_cis * attention_factor


def patched_apply_rotary_emb(xq, xk, freqs_cis):
    if xq.dtype != torch.float64:
        return _ORIG["apply_rotary_emb"](xq, xk, freqs_cis)
    xq_ = torch.view_as_complex(xq.contiguous().reshape(*xq.shape[:-1], -1, 2))
    xk_ = torch.view_as_complex(xk.contiguous().reshape(*xk.shape[:-1], -1, 2))
    freqs_cis = freqs_cis.unsqueeze(1).to(xq_.device)
    xq_out = torch.view_as_real(xq_ * freqs_cis).flatten(3)
    xk_out = torch.view_as_real(xk_ * freqs_cis).flatten(3)
    return xq_out, xk_out


def patched_eager_attention_forward(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    key_states = mdv2.repeat_kv(key, module.num_key_value_groups)
    value_states = mdv2.repeat_kv(value, module.num_key_value_groups)
    attn_weights = torch.matmul(query, key_states.transpose(2, 3)) * scaling
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    attn_weights = F.softmax(attn_weights, dim=-1, dtype=_compute_dtype(query.dtype)).to(query.dtype)
    attn_weights = F.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value_states)
    attn_output = attn_output.transpose(1, 2).contiguous()
    return attn_output, attn_weights


@contextlib.contextmanager
def hf_patches(router=True, float64=True):
    """router: install the patched router; float64: install the dtype-faithful norm/rope/attention functions."""
    try:
        if router:
            mdv2.DeepseekV2TopkRouter.forward = patched_router_forward
        if float64:
            mdv2.DeepseekV2RMSNorm.forward = patched_rms_forward
            mdv2.DeepseekV2RotaryEmbedding.forward = patched_rotary_forward
            mdv2.apply_rotary_emb = patched_apply_rotary_emb
            mdv2.eager_attention_forward = patched_eager_attention_forward
        yield
    finally:
        mdv2.DeepseekV2TopkRouter.forward = _ORIG["router_forward"]
        mdv2.DeepseekV2RMSNorm.forward = _ORIG["rms_forward"]
        mdv2.DeepseekV2RotaryEmbedding.forward = _ORIG["rotary_forward"]
        mdv2.apply_rotary_emb = _ORIG["apply_rotary_emb"]
        mdv2.eager_attention_forward = _ORIG["eager_attention_forward"]
        ROUTER_RECORDS.clear()



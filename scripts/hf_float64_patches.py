"""Float64 and DeepSeek-semantics patches applied to transformers' DeepseekV2 while generating fixtures
(see scripts/README-fixtures.md): the router renormalises when norm_topk_prob is set, records routing, and
RMSNorm, RoPE, the router softmax and attention run in float64. Used by gen_model_fixtures.py (and, router only,
by check_generate_with_transformers.py); the patches all generators share are in fixture_common.py."""

import contextlib

import torch
import torch.nn.functional as F
from transformers.models.deepseek_v2 import modeling_deepseek_v2 as mdv2

from fixture_common import compute_dtype, make_eager_attention, mask_to_top_groups, patched_rms_forward, \
    rope_params_f64, swap_attributes

# --------------------------------------------------------------------------------------------------------------
# float64-faithful replacements for the few transformers functions that force float32 intermediates
# --------------------------------------------------------------------------------------------------------------

ROUTER_RECORDS = []  # filled by the patched router: one dict per MoE layer call, in layer order

_ORIG = dict(  # transformers' own functions, for the inputs the patches leave alone
    rotary_forward=mdv2.DeepseekV2RotaryEmbedding.forward,
    apply_rotary_emb=mdv2.apply_rotary_emb,
)


def patched_router_forward(self, hidden_states):
    """transformers 5.23 DeepseekV2TopkRouter.forward + DeepSeek's norm_topk_prob + score recording.

    For float32 input and norm_topk_prob=False this performs exactly the operations of the original."""
    batch_shape = hidden_states.shape[:-1]
    hidden_states = hidden_states.view(-1, self.hidden_dim)
    dt = compute_dtype(hidden_states.dtype)
    router_logits = F.linear(hidden_states.type(dt), self.weight.type(dt))
    scores = router_logits.softmax(dim=-1, dtype=dt)
    full_scores = scores  # before any group masking (used by the aux loss)
    group_scores = None
    if self.topk_method == "greedy":
        topk_weights, topk_indices = torch.topk(scores, k=self.top_k, dim=-1, sorted=False)
    elif self.topk_method == "group_limited_greedy":
        group_scores = scores.view(-1, self.num_group, self.num_experts // self.num_group).max(dim=-1).values
        scores = mask_to_top_groups(self, scores, group_scores, 0.0)
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


def rope_inv_freq_f64(config):
    """float64 inverse frequencies and cos/sin attention factor of DeepseekV2's default / YaRN RoPE (width
    qk_rope_head_dim). Checked against transformers by gen_model_fixtures.py."""
    return rope_params_f64(config, config.qk_rope_head_dim)


def patched_rotary_forward(self, x, position_ids):
    """DeepseekV2RotaryEmbedding.forward: complex freqs_cis, re-derived in float64 for float64 input."""
    if x.dtype != torch.float64:
        return _ORIG["rotary_forward"](self, x, position_ids)
    inv_freq, attention_factor = rope_inv_freq_f64(self.config)
    freqs = position_ids[..., None].to(torch.float64) * inv_freq.to(x.device)
    freqs_cis = torch.polar(torch.ones_like(freqs), freqs)  # complex128
    return freqs_cis * attention_factor


def patched_apply_rotary_emb(xq, xk, freqs_cis):
    """modeling_deepseek_v2.apply_rotary_emb (view_as_complex pairs), in complex128 for float64 input."""
    if xq.dtype != torch.float64:
        return _ORIG["apply_rotary_emb"](xq, xk, freqs_cis)
    xq_ = torch.view_as_complex(xq.contiguous().reshape(*xq.shape[:-1], -1, 2))
    xk_ = torch.view_as_complex(xk.contiguous().reshape(*xk.shape[:-1], -1, 2))
    freqs_cis = freqs_cis.unsqueeze(1).to(xq_.device)
    xq_out = torch.view_as_real(xq_ * freqs_cis).flatten(3)
    xk_out = torch.view_as_real(xk_ * freqs_cis).flatten(3)
    return xq_out, xk_out


@contextlib.contextmanager
def hf_patches(router=True, float64=True):
    """router: install the patched router; float64: install the dtype-faithful norm/rope/attention functions."""
    replacements = []
    if router:
        replacements.append((mdv2.DeepseekV2TopkRouter, "forward", patched_router_forward))
    if float64:
        replacements += [
            (mdv2.DeepseekV2RMSNorm, "forward", patched_rms_forward),
            (mdv2.DeepseekV2RotaryEmbedding, "forward", patched_rotary_forward),
            (mdv2, "apply_rotary_emb", patched_apply_rotary_emb),
            (mdv2, "eager_attention_forward", make_eager_attention(mdv2)),
        ]
    try:
        with swap_attributes(replacements):
            yield
    finally:
        ROUTER_RECORDS.clear()

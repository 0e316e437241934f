#!/usr/bin/env python3
"""Generate FP8 block-quantized DeepSeek-V3 fixtures (DeepSeek-V3 hub checkpoint layout) with reference values.

Usage:  python3 scripts/gen_fp8_fixtures.py [--out Tests/Fixtures/v3fp8] [--only NAME ...]

Requires: torch, transformers (written against 5.25.0), safetensors; accelerate for the from_pretrained cross-check
(without it that one check is skipped and the script says so). CPU only, one thread.

For every fixture NAME (FIXTURES below) this writes Tests/Fixtures/v3fp8/NAME/ with
  config.json, generation_config.json   what save_pretrained writes for the BF16 model, plus the hub's
                                        "quantization_config": {"quant_method": "fp8", "fmt": "e4m3",
                                        "activation_scheme": "dynamic", "weight_block_size": [BR, BC]}
  model.safetensors                     per-expert names as on the hub; every 2-D Linear weight except
                                        embed_tokens, lm_head, norms and the router mlp.gate.weight is stored as
                                        F8_E4M3 (a few as F8_E5M2) with a companion F32 X.weight_scale_inv
                                        [ceil(rows/BR), ceil(cols/BC)]; the rest BF16, router weight and
                                        e_score_correction_bias F32
  dequant.safetensors                   fp32.<N> = float32(q) * scale_inv expanded to blocks (ragged edges cropped),
                                        bf16.<N> = fp32.<N> rounded to bf16 (stored BF16), for every quantized N
  inputs.json, expected.safetensors     float64 transformers reference (gen_v3_fixtures.run_reference) of the model
                                        whose quantized weights are the bf16.<N> values (everything else as stored):
                                        logits, loss, grad.<w>, topk_idx.<layer>, topk_weight.<layer>, exactly the
                                        layout of Tests/Fixtures/v3

See scripts/README-fp8-fixtures.md. Deterministic: fixed seeds, the v3 generator's tie-free retry schedule.
"""

import copy
import json
import math
import os
import re
import shutil
import sys
import tempfile

import torch
from safetensors import safe_open
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_v3_fixtures as v3  # noqa: E402  (calls fixture_common.setup(): one thread, deterministic, quiet)
import fixture_common as fc  # noqa: E402
from fixture_common import check, max_rel_over, rel_err  # noqa: E402
from v3_fixture_specs import FIXTURES as V3_FIXTURES  # noqa: E402

from transformers import DeepseekV3ForCausalLM, FineGrainedFP8Config  # noqa: E402
from transformers.integrations import finegrained_fp8 as hf_fp8  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO_ROOT, "Tests", "Fixtures", "v3fp8")
MAX_BYTES = 1024 * 1024

# fmt -> (torch dtype, safetensors dtype string, largest finite value). DeepSeek: s = amax / 448 for E4M3.
FP8 = {
    "e4m3": (torch.float8_e4m3fn, "F8_E4M3", 448.0),
    "e5m2": (torch.float8_e5m2, "F8_E5M2", 57344.0),
}
SCALE_SUFFIX = "_scale_inv"  # X.weight -> X.weight_scale_inv

# What DeepSeek-V3 quantizes: every 2-D Linear weight but embed_tokens, lm_head, norms and the router mlp.gate.
QUANTIZED_PATTERNS = [
    r"self_attn\.(q_proj|q_a_proj|q_b_proj|kv_a_proj_with_mqa|kv_b_proj|o_proj)\.weight",
    r"mlp\.(gate_proj|up_proj|down_proj)\.weight",
    r"mlp\.experts\.\d+\.(gate_proj|up_proj|down_proj)\.weight",
    r"mlp\.shared_experts\.(gate_proj|up_proj|down_proj)\.weight",
]


def v3_base(name):
    (spec,) = [s for s in V3_FIXTURES if s["name"] == name]
    return copy.deepcopy(spec)


def fp8_spec(name, base, note, seed, block, e5m2, config=None, **kw):
    spec = v3_base(base)
    spec.update(name=name, note=note, seed=seed, block=list(block), e5m2=list(e5m2), base=base,
                weight_dtype="bfloat16", shards=1, **kw)
    spec["config"].update(config or {})
    return spec


FIXTURES = [
    fp8_spec(
        "v3fp8_e4m3_block6x8",
        base="v3_hublike_qlora_yarn_group_sharded",
        note="v3_hublike_qlora_yarn_group_sharded with q_lora_rank 20 and v_head_dim 10 (so q_b_proj, kv_b_proj and "
        "o_proj have ragged column blocks), one file, BF16, FP8 blocks [6, 8]: ragged row and/or column edge blocks "
        "in every quantized tensor but the dense gate/up_proj [48, 32]; all o_proj and layer 1's routed experts' "
        "down_proj stored E5M2",
        seed=61000,
        block=(6, 8),
        e5m2=[r"\.self_attn\.o_proj\.weight$", r"^model\.layers\.1\.mlp\.experts\.\d+\.down_proj\.weight$"],
        config=dict(q_lora_rank=20, v_head_dim=10),
    ),
    fp8_spec(
        "v3fp8_e4m3_block128_qproj_bias",
        base="v3_nolora_group8keep3_rotatehalf_bias",
        note="v3_nolora_group8keep3_rotatehalf_bias (q_proj, attention bias on kv_a/o kept BF16, 16 experts in 8 "
        "groups), one file, BF16, the hub block size [128, 128]: every quantized tensor is ONE ragged block (scale "
        "[1, 1]); all o_proj and layer 2's routed experts' down_proj stored E5M2",
        seed=62000,
        block=(128, 128),
        e5m2=[r"\.self_attn\.o_proj\.weight$", r"^model\.layers\.2\.mlp\.experts\.\d+\.down_proj\.weight$"],
    ),
]


# --------------------------------------------------------------------------------------------------------------
# Which tensors, quantize, dequantize
# --------------------------------------------------------------------------------------------------------------


def is_quantized(name, t):
    """DeepSeek-V3's rule: a 2-D Linear weight that is not embed_tokens, lm_head, a norm or the router."""
    if not name.endswith(".weight") or t.dim() != 2:
        return False
    if "embed_tokens" in name or name == "lm_head.weight" or v3.is_norm_weight(name) or v3.is_router_weight(name):
        return False
    check(any(re.search(p + "$", name) for p in QUANTIZED_PATTERNS), f"unexpected 2-D weight {name}")
    return True


def fmt_of(spec, name):
    return "e5m2" if any(re.search(p, name) for p in spec["e5m2"]) else "e4m3"


def expand_blocks(s, shape, block):
    """[nr, nc] per-block values -> [rows, cols]: repeat_interleave over both dims, crop the ragged edges."""
    R, C = shape
    BR, BC = block
    return s.repeat_interleave(BR, dim=0).repeat_interleave(BC, dim=1)[:R, :C]


def quantize(w, block, fmt):
    """DeepSeek's block quantization, in float32: per block s = amax|w| / FMAX (1 for an all-zero block),
    q = (w / s).to(fp8), weight_scale_inv = s. Returns (q, s, number of all-zero blocks)."""
    dtype, _, fmax = FP8[fmt]
    w = w.to(torch.float32)
    R, C = w.shape
    BR, BC = block
    nr, nc = math.ceil(R / BR), math.ceil(C / BC)
    padded = torch.zeros(nr * BR, nc * BC, dtype=torch.float32)
    padded[:R, :C] = w.abs()
    amax = padded.view(nr, BR, nc, BC).amax(dim=(1, 3))
    zero = amax == 0
    s = torch.where(zero, torch.ones_like(amax), amax / fmax)
    scaled = w / expand_blocks(s, (R, C), block)
    # |w / s| can exceed FMAX by float32 rounding of amax / FMAX only; it then rounds back to FMAX
    check(scaled.abs().max().item() <= fmax * (1 + 2**-20), f"scaled weight {scaled.abs().max().item()} > {fmax}")
    q = scaled.to(dtype)
    check(torch.isfinite(q.to(torch.float32)).all().item(), "non-finite fp8 value")
    check(q.to(torch.float32).abs().max().item() <= fmax, "fp8 value above the format's maximum")
    return q, s.contiguous(), int(zero.sum())


def dequantize(q, s, block):
    """The reference formula: w[r, c] = float32(q[r, c]) * scale_inv[r // BR, c // BC] (one float32 multiply)."""
    return q.to(torch.float32) * expand_blocks(s, q.shape, block)


def ragged_info(shape, block):
    """(scale shape, rows ragged, cols ragged, number of ragged blocks, number of blocks)."""
    R, C = shape
    BR, BC = block
    nr, nc = math.ceil(R / BR), math.ceil(C / BC)
    rr, cr = R % BR != 0, C % BC != 0
    n_ragged = nr * nc - (nr - rr) * (nc - cr)
    return [nr, nc], rr, cr, n_ragged, nr * nc


def tensor_kind(name):
    return re.sub(r"experts\.\d+\.", "experts.E.", re.sub(r"^model\.layers\.\d+\.", "model.layers.L.", name))


# --------------------------------------------------------------------------------------------------------------
# Building the model pair: original BF16 weights -> quantized checkpoint -> bf16-dequantized reference model
# --------------------------------------------------------------------------------------------------------------


def fuse_experts(model, disk, I):
    """Inverse of to_disk_names: in-memory state_dict (fused experts) from on-disk per-expert tensors."""
    out = {}
    for name, t in model.state_dict().items():
        if name.endswith("mlp.experts.gate_up_proj"):
            p = name[: -len("gate_up_proj")]
            out[name] = torch.stack([torch.cat([disk[f"{p}{e}.gate_proj.weight"], disk[f"{p}{e}.up_proj.weight"]])
                                     for e in range(t.shape[0])])
        elif name.endswith("mlp.experts.down_proj"):
            p = name[: -len("down_proj")]
            out[name] = torch.stack([disk[f"{p}{e}.down_proj.weight"] for e in range(t.shape[0])])
        else:
            out[name] = disk[name]
        check(out[name].shape == t.shape, f"fused {name} shape {tuple(out[name].shape)} vs {tuple(t.shape)}")
    return out


def build(spec, seed):
    """Returns dict(orig: on-disk float32 values of the original model, quant: {N: (q, s, fmt)}, deq32/deq16:
    {N: fp32 / bf16 dequant}, model: float32 model holding the bf16-dequantized weights)."""
    cfg = v3.make_config(spec)
    I = cfg.moe_intermediate_size
    model32 = v3.build_model(spec, seed)  # every weight bf16-valued except the router weight; bias buffers F32
    orig = v3.to_disk_names({k: v.detach() for k, v in model32.state_dict().items()}, I)
    quant, deq32, deq16, zero_blocks = {}, {}, {}, 0
    for n in sorted(orig):
        if is_quantized(n, orig[n]):
            fmt = fmt_of(spec, n)
            q, s, z = quantize(orig[n], spec["block"], fmt)
            zero_blocks += z
            quant[n] = (q, s, fmt)
            deq32[n] = dequantize(q, s, spec["block"])
            deq16[n] = deq32[n].to(torch.bfloat16)
    disk_deq = {n: (deq16[n].to(torch.float32) if n in quant else t) for n, t in orig.items()}
    model = copy.deepcopy(model32)
    fused = fuse_experts(model, disk_deq, I)
    model.load_state_dict(fused)
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    back = v3.to_disk_names(sd, I)
    check(sorted(back) == sorted(disk_deq) and all(torch.equal(back[k], disk_deq[k]) for k in back),
          "fuse_experts is not the inverse of to_disk_names")
    model.eval()
    return dict(orig=orig, quant=quant, deq32=deq32, deq16=deq16, model=model, zero_blocks=zero_blocks)


# --------------------------------------------------------------------------------------------------------------
# transformers' own FP8 dequantization (finegrained_fp8.py), as a cross-check
# --------------------------------------------------------------------------------------------------------------


def hf_function_checks(spec, quant, deq32):
    """(a) _dequantize_fp8_weight (the backward-pass dequant of FP8Linear, configured block size, crops ragged
    edges) and (b) Fp8Dequantize._dequantize_one (the from_pretrained(dequantize=True) path, which INFERS the block
    size as rows // scale_rows, cols // scale_cols), per tensor, float32 output. Returns counts."""
    block = spec["block"]
    n_a = 0
    b = dict(equal=0, raises=0, wrong=0, wrong_names=[], raise_names=[])
    op = hf_fp8.Fp8Dequantize(None)
    for n, (q, s, fmt) in sorted(quant.items()):
        got = hf_fp8._dequantize_fp8_weight(q.clone(), s.clone(), block, torch.float32)
        check(got.dtype == torch.float32 and torch.equal(got, deq32[n]), f"_dequantize_fp8_weight differs for {n}")
        n_a += 1
        try:
            got_b = op._dequantize_one(q.clone(), s.clone(), output_dtype=torch.float32)
        except ValueError:
            b["raises"] += 1
            b["raise_names"].append(n)
            continue
        if torch.equal(got_b, deq32[n]):
            b["equal"] += 1
        else:
            b["wrong"] += 1
            b["wrong_names"].append(n)
    # where (b) works it must be exactly the non-ragged tensors (or single-block ones); anything else is its bug
    for n in b["wrong_names"] + b["raise_names"]:
        _, rr, cr, _, _ = ragged_info(quant[n][0].shape, block)
        check(rr or cr, f"Fp8Dequantize fails on the non-ragged {n}")
    return n_a, b


def hf_from_pretrained_check(spec, out_dir, ref_model, ref_logits, input_ids, labels):
    """from_pretrained(out_dir, quantization_config=FineGrainedFP8Config(dequantize=True)) on CPU. Returns a status
    string; on success the loaded state_dict must equal the bf16-dequantized reference model bit for bit (router
    weight and bias F32) and give bit-identical float64 reference logits."""
    try:
        import accelerate  # noqa: F401
    except ImportError:
        return "SKIPPED (accelerate not installed; transformers' FP8 quantizer requires it)"
    qc = FineGrainedFP8Config(weight_block_size=tuple(spec["block"]), dequantize=True)
    try:
        m = DeepseekV3ForCausalLM.from_pretrained(out_dir, quantization_config=qc)
    except Exception as e:  # noqa: BLE001  (reported, not hidden)
        msg = str(e).split("\n")[0]
        return f"FAILS: {type(e).__name__}: {msg}"
    sd, want = m.state_dict(), ref_model.state_dict()
    check(sorted(sd) == sorted(want), f"loaded keys differ: {sorted(set(sd) ^ set(want))[:6]}")
    wrong = []
    for k in sorted(want):
        keep32 = v3.is_router_weight(k) or k.endswith(v3.BIAS_NAME)
        check(sd[k].dtype == (torch.float32 if keep32 else torch.bfloat16), f"loaded {k} dtype {sd[k].dtype}")
        if not torch.equal(sd[k].to(torch.float32), want[k]):
            wrong.append(k)
    if wrong:
        return f"LOADS BUT DIFFERS in {len(wrong)} tensors, e.g. {wrong[:3]}"
    m.eval()
    ref2 = v3.run_reference(m.to(torch.float32), input_ids, labels, want_grads=False)
    check(torch.equal(ref2["logits"], ref_logits), "from_pretrained(dequantize=True) gives other reference logits")
    return ("OK: from_pretrained(dequantize=True) gives every tensor bit for bit (BF16, router weight and bias "
            "F32) and bit-identical float64 reference logits")


# --------------------------------------------------------------------------------------------------------------
# Per-fixture driver
# --------------------------------------------------------------------------------------------------------------


def write_config(tmp_dir, out_dir, spec):
    """config.json = save_pretrained's, plus the hub's quantization_config, in save_pretrained's format."""
    with open(os.path.join(tmp_dir, "config.json")) as f:
        text = f.read()
    cfg = json.loads(text)
    check(text == json.dumps(cfg, indent=2, sort_keys=True) + "\n", "save_pretrained config.json format changed")
    check("quantization_config" not in cfg and cfg["dtype"] == "bfloat16", "unexpected saved config")
    cfg["quantization_config"] = {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                                  "weight_block_size": list(spec["block"])}
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        f.write(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    shutil.copy(os.path.join(tmp_dir, "generation_config.json"), os.path.join(out_dir, "generation_config.json"))
    return cfg


def generate(spec, out_root, max_attempts=200):
    name, block = spec["name"], spec["block"]
    print(f"\n=== {name}: {spec['note']}")
    cfg = v3.make_config(spec)
    K, E, I = cfg.num_experts_per_tok, cfg.n_routed_experts, cfg.moe_intermediate_size
    G, TG = cfg.n_group, cfg.topk_group
    check(E % G == 0 and E // G >= 2 and TG * (E // G) >= K, "group layout")
    check(I % 4 == 0, "expert width must be a multiple of 4 (grouped_mm stride limit)")

    # ---- the v3 generator's deterministic retry schedule, on the model that is the reference: bf16-dequantized --
    def attempt(seed):
        b = build(spec, seed)
        input_ids, labels = fc.make_inputs(spec, seed)
        ref = v3.run_reference(b["model"], input_ids, labels)
        gap_k, gap_g = v3.routing_gaps(ref, v3.router_biases(b["model"]), cfg)
        return {"min top-k gap": gap_k, "group gap": gap_g}, (b, input_ids, labels, ref)

    seed, gaps, (b, input_ids, labels, ref) = fc.first_tie_free_seed(spec, attempt, max_attempts)
    quant, deq32, deq16, orig, model = b["quant"], b["deq32"], b["deq16"], b["orig"], b["model"]
    moe_layers = ref["moe_layers"]
    print(f"  seed {seed}; MoE layers {moe_layers}; min top-{K} biased-score gap {gaps['min top-k gap']:.4g}; "
          + (f"min top-{TG}-of-{G} group-score gap {gaps['group gap']:.4g}" if TG < G else "no group step"))

    # ---- quantization checks ----------------------------------------------------------------------------------
    check(b["zero_blocks"] == 0, "an all-zero block (s = 1 fallback) occurred")
    kinds, n_blocks, n_ragged_blocks, n_ragged_tensors = {}, 0, 0, 0
    worst_q = {"e4m3": 0.0, "e5m2": 0.0}
    dbl_round = 0
    for n, (q, s, fmt) in sorted(quant.items()):
        R, C = orig[n].shape
        sshape, rr, cr, nrag, nb = ragged_info((R, C), block)
        check(q.dtype == FP8[fmt][0] and list(q.shape) == [R, C], f"{n}: q {q.dtype} {tuple(q.shape)}")
        check(s.dtype == torch.float32 and list(s.shape) == sshape, f"{n}: scale {s.dtype} {list(s.shape)}")
        check(torch.isfinite(s).all().item() and (s > 0).all().item(), f"{n}: scale not finite and > 0")
        check(not torch.equal(deq32[n], orig[n]), f"{n}: dequantized == original (nothing quantized)")
        check(torch.equal(deq16[n], deq32[n].to(torch.bfloat16)) and deq16[n].dtype == torch.bfloat16, f"{n}: bf16")
        # the float32 multiply is correctly rounded: fp32.N == float32(exact product computed in float64)
        exact = q.to(torch.float64) * expand_blocks(s.to(torch.float64), (R, C), block)
        check(torch.equal(exact.to(torch.float32), deq32[n]), f"{n}: float32 product not correctly rounded")
        dbl_round += int((exact.to(torch.bfloat16) != deq16[n]).sum())
        # each block's largest |q| is the format's maximum (s = amax / FMAX), so blocks use the full range
        BR, BC = block
        qa = torch.zeros(sshape[0] * BR, sshape[1] * BC)
        qa[:R, :C] = q.to(torch.float32).abs()
        check(torch.equal(qa.view(sshape[0], BR, sshape[1], BC).amax(dim=(1, 3)), torch.full(sshape, FP8[fmt][2])),
              f"{n}: some block's max |q| is not {FP8[fmt][2]}")
        worst_q[fmt] = max(worst_q[fmt], rel_err(deq32[n], orig[n]))
        k = tensor_kind(n)
        e = kinds.setdefault(k, dict(shape=[R, C], scale=sshape, rr=rr, cr=cr, ragged=nrag, blocks=nb, count=0,
                                     fmts=set()))
        check(e["shape"] == [R, C], f"{k}: shapes differ across layers")
        e["count"] += 1
        e["fmts"].add(fmt)
        n_blocks += nb
        n_ragged_blocks += nrag
        n_ragged_tensors += int(nrag > 0)
    n_e5m2 = sum(1 for v in quant.values() if v[2] == "e5m2")
    check(n_e5m2 > 0 and n_e5m2 < len(quant), "E5M2 and E4M3 must both be present")
    check(n_ragged_tensors > 0 and n_ragged_blocks > 0, "no ragged block")
    print(f"  {len(quant)} quantized tensors ({len(quant) - n_e5m2} E4M3, {n_e5m2} E5M2), block {block}: "
          f"{n_ragged_tensors} with ragged edge blocks, {n_ragged_blocks} of {n_blocks} blocks ragged; max rel "
          f"quantization error (max|deq - w| / max|w| per tensor) E4M3 {worst_q['e4m3']:.3g}, E5M2 "
          f"{worst_q['e5m2']:.3g}")
    print(f"  scale shapes finite > 0; fp32 dequant == float64 exact product rounded once; bf16 == fp32 rounded; "
          f"every block's max |q| is the format maximum; elements where bf16(exact product) != bf16(fp32 product) "
          f"(double rounding): {dbl_round}")
    print("    kind                                                shape     scale   ragged rows/cols  ragged/blocks  n  fmt")
    for k, e in kinds.items():
        print(f"    {k:50s} {str(e['shape']):9s} {str(e['scale']):7s} {str(e['rr']):5s}/{str(e['cr']):5s}      "
              f"{e['ragged']:3d}/{e['blocks']:<3d}     {e['count']:3d}  {'/'.join(sorted(e['fmts']))}")

    # ---- transformers' FP8 dequantization functions ------------------------------------------------------------
    n_a, fb = hf_function_checks(spec, quant, deq32)
    print(f"  transformers finegrained_fp8._dequantize_fp8_weight(q, s, {block}, float32) == fp32.N bitwise for "
          f"all {n_a} tensors")
    print(f"  transformers Fp8Dequantize._dequantize_one (block size inferred from the scale grid, the from_pretrained"
          f" path): equal {fb['equal']}, raises ValueError {fb['raises']}, silently wrong {fb['wrong']}"
          + (f" (e.g. {fb['wrong_names'][0]})" if fb["wrong_names"] else ""))

    # ---- write --------------------------------------------------------------------------------------------------
    out_dir = fc.fresh_dir(out_root, name)
    bf16_model = v3.transformers_bf16_model(model)
    tmp = tempfile.mkdtemp(prefix="v3fp8_")
    try:
        bf16_model.save_pretrained(tmp)
        check(sorted(os.listdir(tmp)) == ["config.json", "generation_config.json", "model.safetensors"],
              f"save_pretrained wrote {os.listdir(tmp)}")
        saved, _ = fc.load_disk_weights(tmp)
        config = write_config(tmp, out_dir, spec)
    finally:
        shutil.rmtree(tmp)
    check(sorted(saved) == sorted(orig), "save_pretrained names != to_disk_names")
    tensors = {}
    for n, t in saved.items():
        keep32 = v3.is_router_weight(n) or n.endswith(v3.BIAS_NAME)
        check(t.dtype == (torch.float32 if keep32 else torch.bfloat16), f"saved {n} dtype {t.dtype}")
        if n in quant:
            check(torch.equal(t, deq16[n]), f"saved {n} != bf16 dequant")
            q, s, fmt = quant[n]
            tensors[n] = q.contiguous()
            tensors[n + SCALE_SUFFIX] = s
        else:
            check(torch.equal(t.to(torch.float32), orig[n]), f"saved {n} != original")
            tensors[n] = t
    save_file(tensors, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    dq = {}
    for n in sorted(quant):
        dq["fp32." + n] = deq32[n].contiguous()
        dq["bf16." + n] = deq16[n].contiguous()
    save_file(dq, os.path.join(out_dir, "dequant.safetensors"), metadata={"format": "pt"})
    fc.write_inputs(os.path.join(out_dir, "inputs.json"), input_ids, labels)
    tw64 = {L: v3.sorted_routing(ref["routing"][L][2], ref["routing"][L][1]) for L in moe_layers}
    expected = {"logits": ref["logits"].float().contiguous(), "loss": ref["loss"].reshape(1).float()}
    for k, v in v3.to_disk_names(ref["grads"], I).items():
        expected["grad." + k] = v.float().contiguous()
    for L in moe_layers:
        expected[f"topk_idx.{L}"] = tw64[L][0].float().contiguous()
        expected[f"topk_weight.{L}"] = tw64[L][1].float().contiguous()
    fc.save_expected(out_dir, expected)

    # ---- read back what was written: dtypes on disk, scales, dequant, grads --------------------------------------
    with open(os.path.join(out_dir, "model.safetensors"), "rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    disk, _ = fc.load_disk_weights(out_dir)  # model.safetensors and dequant.safetensors
    with safe_open(os.path.join(out_dir, "model.safetensors"), "pt") as f:
        model_keys = sorted(f.keys())
    for n in model_keys:
        want = FP8[quant[n][2]][1] if n in quant else (
            "F32" if n.endswith(SCALE_SUFFIX) or v3.is_router_weight(n) or n.endswith(v3.BIAS_NAME) else "BF16")
        check(header[n]["dtype"] == want, f"{n} stored as {header[n]['dtype']}, expected {want}")
        if n.endswith(SCALE_SUFFIX):
            w = n[: -len(SCALE_SUFFIX)]
            check(w in quant and header[n]["shape"] == list(quant[w][1].shape), f"stray or misshaped scale {n}")
    check(sorted(k for k in model_keys if k.endswith(SCALE_SUFFIX)) == sorted(n + SCALE_SUFFIX for n in quant),
          "one scale per quantized weight")
    for n in quant:
        check(torch.equal(dequantize(disk[n], disk[n + SCALE_SUFFIX], block), disk["fp32." + n]), f"re-read {n}")
        check(disk["bf16." + n].dtype == torch.bfloat16 and torch.equal(disk["bf16." + n], deq16[n]), f"bf16.{n}")
    param_names = set(v3.to_disk_names(dict(model.named_parameters()), I))
    check(set(k[5:] for k in expected if k.startswith("grad.")) == param_names, "one grad. per parameter")
    check(param_names == {k for k in model_keys if not k.endswith(SCALE_SUFFIX) and not k.endswith(v3.BIAS_NAME)},
          "grad. names == stored weights without the scales and the bias buffers")

    # ---- independent float64 implementation (gen_v3_fixtures.manual_reference) on the dequantized files ----------
    W = {k: (disk["bf16." + k] if k in quant else disk[k]) for k in model_keys if not k.endswith(SCALE_SUFFIX)}
    man = v3.manual_reference(cfg, W, input_ids, labels)
    ref_g = v3.to_disk_names(ref["grads"], I)
    merr = dict(logits=rel_err(man["logits"], ref["logits"]), loss=rel_err(man["loss"], ref["loss"]),
                grads=max_rel_over(man["grads"], ref_g),
                topk_weight=max(rel_err(man["routing"][L][1], tw64[L][1]) for L in moe_layers))
    check(all(torch.equal(man["routing"][L][0], tw64[L][0]) for L in moe_layers), "manual routing ids differ")
    check(all(v < 1e-13 for v in merr.values()), merr)
    print("  independent float64 implementation on bf16.N + stored tensors vs transformers float64 reference, max "
          "rel: " + ", ".join(f"{k} {v:.1e}" for k, v in merr.items()) + "; same expert ids")

    # ---- how much the choice of dequantization matters (information for the importer's tests) --------------------
    def logits_with(values):
        m = copy.deepcopy(model)
        D = {k: (values[k].to(torch.float32) if k in quant else orig[k]) for k in orig}
        m.load_state_dict(fuse_experts(m, D, I))
        return v3.run_reference(m, input_ids, labels, want_grads=False)

    r32 = logits_with(deq32)
    ro = logits_with(orig)
    same32 = all(torch.equal(v3.sorted_routing(r32["routing"][L][2], r32["routing"][L][1])[0], tw64[L][0])
                 for L in moe_layers)
    rows_o = sum(int((v3.sorted_routing(ro["routing"][L][2], ro["routing"][L][1])[0] != tw64[L][0]).any(-1).sum())
                 for L in moe_layers)
    print(f"  logits rel diff if the quantized weights stay float32 dequant (no bf16 rounding): "
          f"{rel_err(r32['logits'], ref['logits']):.2e} (same experts: {same32}); with the original unquantized "
          f"weights: {rel_err(ro['logits'], ref['logits']):.2e} ({rows_o} rows route differently)")

    # ---- transformers' from_pretrained with FineGrainedFP8Config(dequantize=True) on CPU --------------------------
    status = hf_from_pretrained_check(spec, out_dir, model, ref["logits"], input_ids, labels)
    print(f"  transformers from_pretrained(dequantize=True) on CPU: {status}")

    sizes = {f: os.path.getsize(os.path.join(out_dir, f)) for f in sorted(os.listdir(out_dir))}
    print(f"  wrote {sizes}")
    print(f"  quantization_config {config['quantization_config']}; loss {ref['loss'].item():.10g}")
    for L in moe_layers:
        print(f"  layer {L} expert load {torch.bincount(tw64[L][0].reshape(-1), minlength=E).tolist()}")
    return dict(name=name, seed=seed, errs=merr, hf=status, fb=fb, n_e5m2=n_e5m2, nq=len(quant),
                ragged=(n_ragged_tensors, n_ragged_blocks, n_blocks), sizes=sizes)


def main():
    fc.run_generator(DEFAULT_OUT, FIXTURES, generate, MAX_BYTES)


if __name__ == "__main__":
    main()

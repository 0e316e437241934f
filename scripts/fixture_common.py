"""Helpers shared by the fixture generators gen_model_fixtures.py (DeepSeek-V2, with hf_float64_patches.py),
gen_family_fixtures.py (qwen3_moe, qwen2_moe, olmoe, mixtral) and gen_v3_fixtures.py (DeepSeek-V3).

What lives here is the same in every generator: process setup, the float64-faithful replacements of transformers
functions that do not depend on the family, weight randomisation, inputs, per-expert names, the loss, error
measures, writing and re-reading the files, the tie-gap retry schedule, the round-trip check and the command line.
Each generator keeps its family-specific patches, reference runs and checks. The random draws here are seeded
from the fixture spec and happen in the order the generators always used, so the fixtures are byte-identical.
"""

import argparse
import contextlib
import copy
import hashlib
import json
import logging
import math
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

TIE_GAP = 1e-4  # minimum float64 gap around every routing decision, for every token and MoE layer


def setup():
    """Quiet transformers, and make torch deterministic on one CPU thread (call once at import)."""
    warnings.filterwarnings("ignore")
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)


def check(cond, msg):
    """A failed check stops the script (not an assert: it must also run under python -O)."""
    if not cond:
        raise SystemExit(f"CHECK FAILED: {msg}")


# --------------------------------------------------------------------------------------------------------------
# float64-faithful replacements of the transformers functions that force float32 intermediates.
# Each performs the original operations with compute dtype promote_types(input dtype, float32): for float32 and
# bf16 inputs that is float32, exactly as transformers does; for float64 inputs it is float64.
# --------------------------------------------------------------------------------------------------------------


def compute_dtype(dtype):
    """float32 for float32/bf16/fp16 inputs (exactly what transformers does), float64 for float64 inputs."""
    return torch.promote_types(dtype, torch.float32)


def patched_rms_forward(self, hidden_states):
    """<Family>RMSNorm.forward (the same code in every family here); original: .to(torch.float32)."""
    input_dtype = hidden_states.dtype
    hidden_states = hidden_states.to(compute_dtype(input_dtype))
    variance = hidden_states.pow(2).mean(-1, keepdim=True)
    hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
    return self.weight * hidden_states.to(input_dtype)


def make_eager_attention(mod):
    """mod.eager_attention_forward (modeling module mod); original: softmax(dtype=torch.float32)."""

    def eager_attention_forward(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
        key_states = mod.repeat_kv(key, module.num_key_value_groups)
        value_states = mod.repeat_kv(value, module.num_key_value_groups)
        attn_weights = torch.matmul(query, key_states.transpose(2, 3)) * scaling
        if attention_mask is not None:
            attn_weights = attn_weights + attention_mask
        attn_weights = F.softmax(attn_weights, dim=-1, dtype=compute_dtype(query.dtype)).to(query.dtype)
        attn_weights = F.dropout(attn_weights, p=dropout, training=module.training)
        attn_output = torch.matmul(attn_weights, value_states)
        attn_output = attn_output.transpose(1, 2).contiguous()
        return attn_output, attn_weights

    return eager_attention_forward


def make_rotary_forward(orig, params_f64):
    """<Family>RotaryEmbedding.forward returning (cos, sin) of width dim (rotate-half layout). Inputs other than
    float64 go to orig, transformers' own code; for float64, params_f64(module) gives (inv_freq, cos/sin factor)."""

    def forward(self, x, position_ids):
        if x.dtype != torch.float64:
            return orig(self, x, position_ids)  # transformers' own code, untouched
        inv_freq, factor = params_f64(self)
        freqs = position_ids[..., None].to(torch.float64) * inv_freq.to(x.device)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos() * factor, emb.sin() * factor

    return forward


def yarn_mscale(scale, m=1.0):
    """modeling_rope_utils.yarn_get_mscale."""
    return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0


def rope_params_f64(config, dim):
    """float64 re-derivation of compute_default_rope_parameters / _compute_yarn_parameters (truncate=True), which
    transformers computes in float32. dim is the rotary width. Returns (inv_freq [dim/2] float64, cos/sin factor)."""
    rp = config.rope_parameters
    base = float(rp["rope_theta"])
    pos_freqs = base ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    if rp["rope_type"] == "default":
        return 1.0 / pos_freqs, 1.0
    check(rp["rope_type"] == "yarn", f"rope_type {rp['rope_type']} not covered")
    check(rp.get("partial_rotary_factor", 1.0) == 1.0 and rp.get("truncate", True), "yarn variant not covered")
    factor = rp["factor"]
    if factor is None:
        factor = config.max_position_embeddings / rp["original_max_position_embeddings"]
    factor = float(factor)
    orig = rp["original_max_position_embeddings"]
    mscale, mscale_all_dim = rp.get("mscale"), rp.get("mscale_all_dim")
    attention_factor = rp.get("attention_factor")
    if attention_factor is None:
        if mscale and mscale_all_dim:
            attention_factor = float(yarn_mscale(factor, mscale) / yarn_mscale(factor, mscale_all_dim))
        else:
            attention_factor = yarn_mscale(factor)
    beta_fast = rp.get("beta_fast") or 32
    beta_slow = rp.get("beta_slow") or 1

    def corr_dim(num_rot):
        return (dim * math.log(orig / (num_rot * 2 * math.pi))) / (2 * math.log(base))

    low = max(math.floor(corr_dim(beta_fast)), 0)
    high = min(math.ceil(corr_dim(beta_slow)), dim - 1)
    if low == high:
        high += 0.001
    ramp = ((torch.arange(dim // 2, dtype=torch.float64) - low) / (high - low)).clamp(0, 1)
    extrap = 1 - ramp
    inv_freq = (1.0 / (factor * pos_freqs)) * (1 - extrap) + (1.0 / pos_freqs) * extrap
    return inv_freq, attention_factor


def mask_to_top_groups(router, scores, group_scores, fill):
    """The group step of DeepSeek's TopkRouter.forward: keep the router.topk_group best groups (of router.num_group
    consecutive experts) and set the scores of every other expert to fill (V2: 0.0, V3: -inf)."""
    group_idx = torch.topk(group_scores, k=router.topk_group, dim=-1, sorted=False)[1]
    group_mask = torch.zeros_like(group_scores)
    group_mask.scatter_(1, group_idx, 1)
    score_mask = (
        group_mask.unsqueeze(-1)
        .expand(-1, router.num_group, router.num_experts // router.num_group)
        .reshape(-1, router.num_experts)
    )
    return scores.masked_fill(~score_mask.bool(), fill)


@contextlib.contextmanager
def swap_attributes(replacements):
    """Set obj.attr = value for every (obj, attr, value) inside the block; the old values come back on exit."""
    saved = [(obj, attr, getattr(obj, attr)) for obj, attr, _ in replacements]
    try:
        for obj, attr, value in replacements:
            setattr(obj, attr, value)
        yield
    finally:
        for obj, attr, value in saved:
            setattr(obj, attr, value)


# --------------------------------------------------------------------------------------------------------------
# Model construction, weights, inputs
# --------------------------------------------------------------------------------------------------------------


def make_config(config_cls, model_cls, spec):
    """config_cls(**spec["config"]) with architectures = [model_cls name], as save_pretrained writes it."""
    cfg = config_cls(**copy.deepcopy(spec["config"]))
    cfg.architectures = [model_cls.__name__]
    return cfg


def build_random_model(model_cls, cfg, seed, weight_dtype, is_norm_weight, keep_float32=None):
    """A float32 model_cls(cfg) whose parameters are drawn from one generator seeded with seed, in sorted name order
    (a tied lm_head is deduplicated): norm weights 1 + 0.1 N(0,1), biases 0.1 N(0,1), all else
    initializer_range * N(0,1). For weight_dtype "bfloat16" the values are rounded to bf16, except for the names
    keep_float32(name) accepts. Returns (model, generator); the caller may draw more from the generator."""
    torch.manual_seed(seed)
    model = model_cls(cfg).to(torch.float32)
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
            if weight_dtype == "bfloat16" and not (keep_float32 and keep_float32(name)):
                val = val.to(torch.bfloat16)
            p.copy_(val.to(torch.float32))
    if cfg.tie_word_embeddings:
        check(model.lm_head.weight is model.model.embed_tokens.weight, "tied lm_head is not the embedding")
    return model, gen


def make_inputs(spec, seed, pad_token_id=None, n_pad_tokens=0):
    """Batch-2 input_ids and labels of length spec["seq_len"] (HF label convention, -100 = ignore). With
    pad_token_id, that id occurs only where placed: n_pad_tokens times, alternating rows."""
    gen = torch.Generator().manual_seed(seed + 7)
    V, T = spec["config"]["vocab_size"], spec["seq_len"]
    input_ids = torch.randint(0, V, (2, T), generator=gen)
    if pad_token_id is not None:
        input_ids[input_ids == pad_token_id] = V - 1  # the pad id occurs only where placed
    if n_pad_tokens:
        check(pad_token_id is not None, "pad tokens in the input need a pad_token_id")
        for i in range(n_pad_tokens):
            input_ids[i % 2, 2 + 3 * i] = pad_token_id
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


def unfuse_experts(named, I, names=("gate_proj", "up_proj", "down_proj"), rename=None, drop_empty=False):
    """transformers 5.x in-memory names -> per-expert checkpoint names. In memory the experts are fused:
    mlp.experts.gate_up_proj [E, 2I, H] (rows [0, I) = gate, rows [I, 2I) = up) and mlp.experts.down_proj [E, H, I].
    On disk: mlp.experts.E.<gate>.weight [I,H], .<up>.weight [I,H], .<down>.weight [H,I], with (gate, up, down) =
    names. rename(name) maps every in-memory name (before the split) to its disk spelling; drop_empty leaves out
    zero-sized tensors."""
    out = {}
    gate, up, down = names
    for name, t in named.items():
        if drop_empty and t.numel() == 0:
            continue
        disk_name = rename(name) if rename else name
        if name.endswith("mlp.experts.gate_up_proj"):
            prefix = disk_name[: -len("gate_up_proj")]
            check(t.dim() == 3 and t.shape[1] == 2 * I, f"{name} shape {tuple(t.shape)}")
            for e in range(t.shape[0]):
                out[f"{prefix}{e}.{gate}.weight"] = t[e, :I, :].contiguous()
                out[f"{prefix}{e}.{up}.weight"] = t[e, I:, :].contiguous()
        elif name.endswith("mlp.experts.down_proj"):
            prefix = disk_name[: -len("down_proj")]
            check(t.dim() == 3 and t.shape[2] == I, f"{name} shape {tuple(t.shape)}")
            for e in range(t.shape[0]):
                out[f"{prefix}{e}.{down}.weight"] = t[e].contiguous()
        else:
            out[disk_name] = t.contiguous()
    return out


# --------------------------------------------------------------------------------------------------------------
# Running models, comparing results
# --------------------------------------------------------------------------------------------------------------


def causal_lm_loss(logits, labels):
    """HF ForCausalLMLoss (no num_items_in_batch): mean CE of logits[:, t] vs labels[:, t+1] over labels != -100,
    here in the logits' dtype (HF casts the logits to float32 first)."""
    V = logits.shape[-1]
    return F.cross_entropy(
        logits[:, :-1, :].reshape(-1, V), labels[:, 1:].reshape(-1), ignore_index=-100, reduction="mean"
    )


def grads_of(value, params, retain):
    """d value / d p for the (name, p) pairs in params, as {name: grad}; zeros where p is unused."""
    gs = torch.autograd.grad(value, [p for _, p in params], allow_unused=True, retain_graph=retain)
    return {n: (g if g is not None else torch.zeros_like(p)).detach() for (n, p), g in zip(params, gs)}


def eager_copy(model, dtype=None):
    """A deep copy of model (cast to dtype if given) with eager attention and eager experts."""
    m = copy.deepcopy(model)
    if dtype is not None:
        m = m.to(dtype)
    m.set_attn_implementation("eager")
    m.set_experts_implementation("eager")
    return m


def rel_err(a, b):
    """max|a - b| / max|b|, in float64."""
    a, b = a.double(), b.double()
    scale = max(b.abs().max().item(), 1e-30)
    return (a - b).abs().max().item() / scale


def max_rel_over(da, db):
    """max over tensors of max|a-b| / max|b| (tensors whose reference is all zero must be ~zero too)."""
    worst = 0.0
    for n in db:
        if db[n].abs().max().item() == 0.0:
            check(da[n].abs().max().item() < 1e-9, f"{n}: reference is zero, other is not")
            continue
        worst = max(worst, rel_err(da[n], db[n]))
    return worst


def first_tie_free_seed(spec, attempt, max_attempts=200):
    """The deterministic retry schedule: seeds spec["seed"], spec["seed"] + 1, ... . attempt(seed) returns
    (gaps, state), gaps a dict of smallest float64 routing gaps; the first seed whose gaps all exceed TIE_GAP wins.
    Returns (seed, gaps, state)."""
    for i in range(max_attempts):
        seed = spec["seed"] + i
        gaps, state = attempt(seed)
        if all(g > TIE_GAP for g in gaps.values()):
            return seed, gaps, state
        print(f"  seed {seed}: routing near-tie (" + ", ".join(f"{k} {v:.3g}" for k, v in gaps.items())
              + "); retrying")
    raise SystemExit("CHECK FAILED: no tie-free seed found")


# --------------------------------------------------------------------------------------------------------------
# Writing and reading back
# --------------------------------------------------------------------------------------------------------------


def fresh_dir(out_root, name):
    """out_root/name, emptied (created if missing)."""
    out_dir = os.path.join(out_root, name)
    if os.path.exists(out_dir):
        shutil.rmtree(out_dir)
    os.makedirs(out_dir)
    return out_dir


def write_json(path, obj, sort_keys=True):
    """obj as indented JSON with a final newline."""
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=sort_keys)
        f.write("\n")


def write_inputs(path, input_ids, labels):
    """inputs.json: {"input_ids": [...], "labels": [...]}, one row per line; checked by reading it back."""
    with open(path, "w") as f:  # one row per line
        rows = lambda t: ",\n    ".join(json.dumps(r) for r in t.tolist())  # noqa: E731
        f.write(f'{{\n  "input_ids": [\n    {rows(input_ids)}\n  ],\n  "labels": [\n    {rows(labels)}\n  ]\n}}\n')
    check(json.load(open(path)) == {"input_ids": input_ids.tolist(), "labels": labels.tolist()}, "inputs.json")


def save_expected(out_dir, expected):
    """expected.safetensors, with the same metadata save_pretrained writes."""
    save_file(expected, os.path.join(out_dir, "expected.safetensors"), metadata={"format": "pt"})


SHARD_FRACTIONS = (0.5, 0.55, 0.6, 0.45, 0.65, 0.4, 0.7, 0.35, 0.3, 0.25)


def save_with_transformers(model_to_save, out_dir, shards, fractions=SHARD_FRACTIONS, tmp_prefix="fx_", **kwargs):
    """model.save_pretrained(out_dir, **kwargs) as is; for shards > 1 the first max_shard_size (a fraction of the
    total, tried in the order given) that yields exactly that many files. Returns that fraction, or None."""
    if shards == 1:
        model_to_save.save_pretrained(out_dir, **kwargs)
        check(os.path.exists(os.path.join(out_dir, "model.safetensors")), "no model.safetensors")
        return None
    total = sum(p.numel() * p.element_size() for p in model_to_save.parameters())
    want = [f"model-{i:05d}-of-{shards:05d}.safetensors" for i in range(1, shards + 1)]
    for frac in fractions:
        tmp = tempfile.mkdtemp(prefix=tmp_prefix)
        try:
            model_to_save.save_pretrained(tmp, max_shard_size=int(total * frac / (shards - 1)), **kwargs)
            got = sorted(f for f in os.listdir(tmp) if f.endswith(".safetensors"))
            if got == want:
                for f in sorted(os.listdir(tmp)):
                    shutil.copy(os.path.join(tmp, f), os.path.join(out_dir, f))
                return frac
        finally:
            shutil.rmtree(tmp)
    raise SystemExit(f"CHECK FAILED: could not obtain exactly {shards} shards from save_pretrained")


def load_disk_weights(out_dir):
    """Every tensor of the weight files in out_dir (not expected.safetensors): ({name: tensor}, {name: file})."""
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


def check_written_weights(out_dir, saved_model, to_disk):
    """The weight files in out_dir hold exactly to_disk(saved_model's state_dict) (a tied lm_head left out), bit for
    bit and dtype for dtype. Returns (disk tensors, file of each tensor)."""
    disk, where = load_disk_weights(out_dir)
    sd = {n: t.detach() for n, t in saved_model.state_dict().items()}
    if saved_model.config.tie_word_embeddings:
        check("lm_head.weight" not in disk, "tied lm_head was written")
        sd.pop("lm_head.weight", None)
    mine = to_disk(sd)
    check(sorted(mine) == sorted(disk), f"names differ: {sorted(set(mine) ^ set(disk))[:8]}")
    for k in mine:
        check(disk[k].dtype == mine[k].dtype and torch.equal(disk[k], mine[k]), f"{k} differs on disk")
    return disk, where


def check_shard_index(out_dir, where):
    """The index weight_map matches the shards; prints its metadata and the layers that span several shards."""
    idx = json.load(open(os.path.join(out_dir, "model.safetensors.index.json")))
    check(idx["weight_map"] == where, "index weight_map does not match the shards")
    layer_files = {}
    for k, fname in where.items():
        layer_files.setdefault(".".join(k.split(".")[:3]), set()).add(fname)
    split = sorted(k for k, fs in layer_files.items() if len(fs) > 1)
    print(f"    index metadata {idx['metadata']}; layers whose tensors span both shards: {split}")


def check_round_trip(config_cls, model_cls, spec, out_dir, model32):
    """from_pretrained(out_dir) gives the spec's config values and model32's state_dict bit for bit (and a tied
    lm_head when configured). Returns the float32 model it loaded."""
    loaded_cfg = config_cls.from_pretrained(out_dir)
    for k, v in spec["config"].items():
        got = getattr(loaded_cfg, k)
        if k == "rope_parameters":
            check(all(got[rk] == rv for rk, rv in v.items()), (k, got, v))
        else:
            check(got == v, (k, got, v))
    loaded = model_cls.from_pretrained(out_dir, dtype=torch.float32)
    sd_mem, sd_disk = model32.state_dict(), loaded.state_dict()
    check(sorted(sd_mem) == sorted(sd_disk), "state_dict keys after from_pretrained")
    for k in sd_mem:
        check(torch.equal(sd_mem[k], sd_disk[k]), f"round-trip mismatch for {k}")
    if loaded_cfg.tie_word_embeddings:
        check(loaded.lm_head.weight is loaded.model.embed_tokens.weight, "from_pretrained did not tie")
    return loaded


# --------------------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------------------


def run_generator(default_out, fixtures, generate, max_bytes=None, summary_label=None):
    """The command line of every generator: --out DIR (default default_out) and --only NAME ...; prints the
    versions in use and calls generate(spec, out) for each selected fixture in order. With summary_label, prints
    one line per result: summary_label(result) and the result's "errs". Ends with the report_tree line."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=default_out)
    ap.add_argument("--only", nargs="*")
    args = ap.parse_args()
    print(f"python {sys.version.split()[0]}, torch {torch.__version__}, transformers {transformers.__version__}, "
          f"safetensors {__import__('safetensors').__version__}; threads {torch.get_num_threads()}")
    os.makedirs(args.out, exist_ok=True)
    results = [generate(spec, args.out) for spec in fixtures if not args.only or spec["name"] in args.only]
    print()
    if summary_label:
        print("summary (float32 unpatched transformers vs float64 reference, max relative differences):")
        for r in results:
            print(f"  {summary_label(r)}  " + "  ".join(f"{k} {v:.1e}" for k, v in r["errs"].items()))
    report_tree(args.out, max_bytes, args.only)


def report_tree(out, max_bytes=None, only=None):
    """Prints the total size and a sha256 over all file names and contents below out; when every fixture was
    written (no only), checks that the total stays under max_bytes."""
    total, digest = 0, hashlib.sha256()
    for root, dirs, files in os.walk(out):
        dirs.sort()
        for f in sorted(files):
            p = os.path.join(root, f)
            total += os.path.getsize(p)
            digest.update(os.path.relpath(p, out).encode())
            digest.update(open(p, "rb").read())
    print(f"total size of {out}: {total} bytes; sha256 of all files {digest.hexdigest()[:16]}")
    if max_bytes is not None and not only:
        check(total < max_bytes, f"fixtures are {total} bytes, more than {max_bytes}")

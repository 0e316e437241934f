#!/usr/bin/env python3
"""Developer check (needs torch + transformers from the local wheel cache; CI does not run it): the tokens
of `esft generate` (greedy, KV cache) equal transformers' greedy `generate` (do_sample=False, its own cache)
on every model fixture, for two prompts of different lengths each, 12 new tokens, no stop token.

transformers' DeepseekV2 router ignores norm_topk_prob; the fixtures' generator patches it
(scripts/hf_float64_patches.py, router only here: fp32 otherwise, as esft computes) and marks each router
with the config's norm_topk_prob, as here, so both run DeepSeek's routing. Written against transformers 5.23
(the fixtures' version). Greedy tokens of two fp32 implementations agree unless two logits are within rounding of each other;
the script prints the smallest top-1/top-2 gap it saw so a disagreement can be told from a tie.

    swift build -c release && python3 scripts/check_generate_with_transformers.py
"""
import json, os, subprocess, sys, tempfile

import torch
from transformers import DeepseekV2ForCausalLM
from transformers.models.deepseek_v2 import modeling_deepseek_v2 as mdv2

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hf_float64_patches import hf_patches  # noqa: E402

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
esft = os.path.join(root, ".build", "release", "esft")
fixtures = os.path.join(root, "Tests", "Fixtures", "models")
NEW = 12
failures, smallest_gap = 0, float("inf")
with tempfile.TemporaryDirectory() as tmp, hf_patches(router=True, float64=False):
    for name in sorted(os.listdir(fixtures)):
        fixture = os.path.join(fixtures, name)
        ids = json.load(open(os.path.join(fixture, "inputs.json")))["input_ids"]
        prompts = [ids[0][:5], ids[1][:9]]
        out = os.path.join(tmp, name + ".jsonl")
        cmd = [esft, "generate", "--model", fixture, "--max-new-tokens", str(NEW), "--out", out, "--threads", "1"]
        for p in prompts:
            cmd += ["--prompt-ids", ",".join(map(str, p))]
        subprocess.run(cmd, check=True, capture_output=True)
        ours = [json.loads(line)["tokens"] for line in open(out)]
        m = DeepseekV2ForCausalLM.from_pretrained(fixture, dtype=torch.float32).eval()
        for mod in m.modules():  # the patched router renormalises only where told to (as the fixture generator does)
            if isinstance(mod, mdv2.DeepseekV2TopkRouter):
                mod.fixture_norm_topk_prob = bool(m.config.norm_topk_prob)
        for p, mine in zip(prompts, ours):
            with torch.no_grad():
                # An explicit all-ones mask: otherwise generate masks prompt tokens equal to pad_token_id.
                g = m.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                               max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False, eos_token_id=None,
                               pad_token_id=0, output_scores=True, return_dict_in_generate=True)
            theirs = g.sequences[0, len(p):].tolist()
            for s in g.scores:
                top = torch.topk(s[0], 2).values
                smallest_gap = min(smallest_gap, float(top[0] - top[1]))
            same = theirs == mine
            failures += not same
            print(f"{name}: prompt of {len(p)} tokens: {'same' if same else 'DIFFERENT'}\n  esft         {mine}\n  transformers {theirs}")
print(f"smallest top-1/top-2 logit gap in transformers' steps: {smallest_gap:.3e}")
print("all fixtures: esft generate = transformers generate" if failures == 0 else f"{failures} prompt(s) differ")
sys.exit(1 if failures else 0)

"""Developer check (needs torch + transformers; CI does not run it): transformers' own
DeepseekV2ForCausalLM.from_pretrained loads what `esft import` → `esft export` writes, and computes the
fixture's logits and loss. Uses the fixtures whose norm_topk_prob is false, where unpatched transformers
is the reference (see scripts/README-fixtures.md).

    swift build -c release && python3 scripts/check_export_with_transformers.py
"""
import json, os, subprocess, sys, tempfile

import numpy as np
import torch
from safetensors.numpy import load_file
from transformers import DeepseekV2ForCausalLM

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
esft = os.path.join(root, ".build", "release", "esft")
worst = 0.0
with tempfile.TemporaryDirectory() as tmp:
    for name in ["lite_yarn_oldcfg", "nolora_group16_bias"]:
        fixture = os.path.join(root, "Tests", "Fixtures", "models", name)
        model, hf = os.path.join(tmp, name), os.path.join(tmp, name + "-hf")
        subprocess.run([esft, "import", fixture, model, "--expert-shards", "2"], check=True, capture_output=True)
        subprocess.run([esft, "export", model, hf], check=True, capture_output=True)
        m = DeepseekV2ForCausalLM.from_pretrained(hf, torch_dtype=torch.float32).eval()
        inputs = json.load(open(os.path.join(fixture, "inputs.json")))
        expected = load_file(os.path.join(fixture, "expected.safetensors"))
        with torch.no_grad():
            out = m(input_ids=torch.tensor(inputs["input_ids"]), labels=torch.tensor(inputs["labels"]))
        err = float(np.max(np.abs(out.logits.numpy() - expected["logits"])) / np.max(np.abs(expected["logits"])))
        worst = max(worst, err)
        print(f"{name}: logits max error relative to max |ref| {err:.2e}; loss {out.loss.item():.6f} (fixture {float(expected['loss'][0]):.6f})")
sys.exit(0 if worst < 1e-4 else 1)

"""Developer check (needs torch + transformers; CI does not run it): transformers' own from_pretrained loads
what `esft import` → `esft export` writes, for every family, and computes the fixture's logits; and a model
trained by esft (ESFT on a few experts) and exported loads to the logits esft computes on the same directory.

DeepSeek-V2 uses the fixtures whose norm_topk_prob is false, where unpatched transformers is the reference
(scripts/README-fixtures.md); the other families use every fixture of Tests/Fixtures/families, /v3 and /v3fp8.

    swift build -c release && python3 scripts/check_export_with_transformers.py
"""
import glob, json, os, subprocess, sys, tempfile

import numpy as np
import torch
from safetensors.numpy import load_file
from transformers import AutoModelForCausalLM

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
esft = os.path.join(root, ".build", "release", "esft")
fixtures = [os.path.join(root, "Tests", "Fixtures", "models", n) for n in ["lite_yarn_oldcfg", "nolora_group16_bias"]]
fixtures += sorted(glob.glob(os.path.join(root, "Tests", "Fixtures", "families", "*")))
fixtures += sorted(glob.glob(os.path.join(root, "Tests", "Fixtures", "v3", "*")))
# FP8 block-scaled DeepSeek-V3: imported (dequantized to bf16), exported bf16 with the router F32, loaded by transformers.
fixtures += sorted(glob.glob(os.path.join(root, "Tests", "Fixtures", "v3fp8", "*")))


def rel(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def transformers_logits(hf, input_ids):
    m = AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float32).eval()
    with torch.no_grad():
        return m(input_ids=torch.tensor(input_ids)).logits.numpy()


def run(*args):
    subprocess.run([esft, *args], check=True, capture_output=True)


worst = 0.0
with tempfile.TemporaryDirectory() as tmp:
    for fixture in fixtures:
        name = os.path.basename(fixture)
        model, hf = os.path.join(tmp, name), os.path.join(tmp, name + "-hf")
        run("import", fixture, model, "--expert-shards", "2")
        run("export", model, hf)
        inputs = json.load(open(os.path.join(fixture, "inputs.json")))
        err = rel(transformers_logits(hf, inputs["input_ids"]), load_file(os.path.join(fixture, "expected.safetensors"))["logits"])
        worst = max(worst, err)
        print(f"{name}: import → export → transformers: logits error relative to max |ref| {err:.2e}")


    # A trained model per family: a byte-vocabulary copy of the fixture's config, ESFT on experts 0 and 1 of every
    # MoE layer for 3 steps, exported with its trained tensors; transformers and `esft forward` read that directory.
    chat = os.path.join(tmp, "chat.jsonl")
    rng = np.random.default_rng(0)
    with open(chat, "w") as f:
        for i in range(64):
            q = " ".join(rng.choice(["ab", "cd", "ef", "gh"], size=int(rng.integers(2, 7))))
            f.write(json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": q[::-1]}]}) + "\n")
    for fixture in [fixtures[0]] + [f for f in fixtures if "families" in f][::2] + [f for f in fixtures if "/v3/" in f][:1]:
        name = os.path.basename(fixture) + "-trained"
        d = os.path.join(tmp, name)
        os.makedirs(d)
        cfg = json.load(open(os.path.join(fixture, "config.json")))
        cfg.update(vocab_size=260, pad_token_id=258, bos_token_id=256, eos_token_id=257)
        json.dump(cfg, open(os.path.join(d, "config.json"), "w"))
        model = os.path.join(d, "model")
        run("init", os.path.join(d, "config.json"), model, "--seed", "3")
        run("data", "prepare", "--tokenizer", "bytes", "--input", chat, "--seq-len", "32", "--out", os.path.join(d, "data.h5"), "--model", model)
        moe = json.loads(subprocess.run([esft, "inspect", model, "--json"], check=True, capture_output=True, text=True).stdout)["moe_layers"]
        json.dump({"experts": {str(l): [0, 1] for l in moe}, "shared_experts": False, "non_expert_modules": False},
                  open(os.path.join(d, "experts.json"), "w"))
        run("train", "--model", model, "--data", os.path.join(d, "data.h5"), "--experts", os.path.join(d, "experts.json"),
            "--steps", "3", "--batch-rows", "4", "--lr", "1e-2", "--out", os.path.join(d, "run"), "--threads", "1")
        hf = os.path.join(d, "hf")
        run("export", model, hf, "--trained", os.path.join(d, "run", "trained.safetensors"))
        tokens = rng.integers(0, 260, size=(2, 12)).tolist()
        json.dump({"input_ids": tokens, "labels": tokens}, open(os.path.join(d, "tokens.json"), "w"))
        run("forward", "--model", hf, "--tokens", os.path.join(d, "tokens.json"), "--out", os.path.join(d, "fwd.safetensors"), "--threads", "1")
        mine = load_file(os.path.join(d, "fwd.safetensors"))["logits"].reshape(2, 12, 260)
        err = rel(transformers_logits(hf, tokens), mine)
        worst = max(worst, err)
        print(f"{name}: esft train → export → transformers vs esft forward on the exported directory: {err:.2e}")
print(f"worst {worst:.2e}")
sys.exit(0 if worst < 1e-4 else 1)

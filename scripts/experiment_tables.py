#!/usr/bin/env python3
"""Tables of scripts/experiments.sh's run directory as Markdown (docs/experiments.md quotes them)."""
import json, os, sys

work = sys.argv[1]
tasks = ["intent", "law", "summary", "translation"]
load = lambda *p: json.load(open(os.path.join(work, *p)))


def experts(cfg):
    return {int(l): set(v) for l, v in cfg["experts"].items()}


if os.path.exists(os.path.join(work, "experiment.json")):
    x = load("experiment.json")
    print(f"Run: {x['config']}, rows of {x['seq_len']} byte tokens, {x['batch_rows']} rows per step, pretraining "
          f"{x['pretrain_steps']} steps on {x['pretrain_tasks']}, fine-tuning {x['finetune_steps']} steps on intent, "
          f"{x['ranks']} ranks, {x['intent_eval_records']} intent eval prompts (≤ {x['max_new_tokens']} new tokens); {x['cpu']}.\n")
base_cfg = load("base", "config.json")
E, K = base_cfg["n_routed_experts"], base_cfg["num_experts_per_tok"]
print(f"Model: configs of {work}/base: {base_cfg['num_hidden_layers']} layers, hidden {base_cfg['hidden_size']}, "
      f"{E} routed experts (top-{K}), {base_cfg['n_shared_experts']} shared.\n")

print("### Concentration (paper Fig. 2): experts per MoE layer that carry p of the score\n")
print("| task | ESFT-Token p=0.2: experts/layer (mean, min–max) | share of routed experts | ESFT-Gate p=0.1: experts/layer |")
print("|---|---|---|---|")
sel = {}
for t in tasks:
    tok, gate = experts(load("experts", f"{t}.token.json")), experts(load("experts", f"{t}.gate.json"))
    sel[t] = tok
    n = [len(v) for v in tok.values()]
    g = [len(v) for v in gate.values()]
    print(f"| {t} | {sum(n)/len(n):.1f} ({min(n)}–{max(n)}) | {100*sum(n)/len(n)/E:.1f}% | {sum(g)/len(g):.1f} ({min(g)}–{max(g)}) |")
print("\nUniform routing would need p·E = " f"{0.2*E:.1f} experts per layer for p = 0.2.\n")

print("### Overlap of the tasks' ESFT-Token sets (mean over layers of |A∩B| / |A∪B|)\n")
print("| | " + " | ".join(tasks) + " |")
print("|---" * (len(tasks) + 1) + "|")
for a in tasks:
    cells = []
    for b in tasks:
        js = [len(sel[a][l] & sel[b][l]) / len(sel[a][l] | sel[b][l]) for l in sel[a]]
        cells.append(f"{sum(js)/len(js):.2f}")
    print(f"| {a} | " + " | ".join(cells) + " |")

print("\n### Fine-tuning on intent\n")
print("| method | intent held-out loss | law | summary | translation | mean of the other three | intent exact match | "
      "trainable parameters | stored (trained tensors) | train wall time |")
print("|---|---|---|---|---|---|---|---|---|---|")
total = None
for name in ["vanilla", "fft", "esft-token", "esft-gate", "esft-token+shared", "esft-token+nonexpert"]:
    losses = [load("eval", name, f"{t}.loss.summary.json")["loss"] for t in tasks]
    exact = load("eval", name, "intent.exact.summary.json")
    if name == "vanilla":
        trainable, stored, secs = "—", "—", "—"
    else:
        s = load("ft", name, "summary.json")
        total = s["totalParameters"]
        trainable = f"{s['trainableParameters']:,} ({100*s['trainableParameters']/total:.1f}%)"
        stored = f"{os.path.getsize(os.path.join(work, 'ft', name, 'trained.safetensors'))/1e6:.2f} MB"
        secs = f"{s['seconds']:.0f} s"
    other = sum(losses[1:]) / 3
    print(f"| {name} | {losses[0]:.4f} | {losses[1]:.4f} | {losses[2]:.4f} | {losses[3]:.4f} | {other:.4f} | "
          f"{exact['correct']}/{exact['records']} | {trainable} | {stored} | {secs} |")
pre = load("pretrain", "summary.json")
print(f"\nPretraining: {pre['steps']} steps, loss {pre['firstLoss']:.3f} → {pre['lastLoss']:.3f}, {pre['seconds']:.0f} s; "
      f"total parameters {pre['totalParameters']:,}.")

#!/usr/bin/env python3
"""Developer benchmark (torch + transformers from the local wheel cache; never in CI): one training step
(forward, backward, AdamW) of esft against Hugging Face transformers on the same random model, batch,
trainable set and threads, the two systems interleaved in one run.

For each model config and mode (ESFT: six routed experts per MoE layer; --full), it
  1. writes a random model with `esft init`, exports it (`esft export`) and loads that in transformers
     (`from_pretrained`, float32, eager attention);
  2. builds one token dataset of exactly B rows (`esft data prepare`, byte tokens), so esft's first step and
     torch's step see the same rows;
  3. alternates, REPS times: `esft train` for STEPS steps (median step time of steps 2..STEPS from
     metrics.jsonl, peak RSS from summary.json) and a fresh python process running transformers for STEPS
     steps (median of steps 2..STEPS, peak RSS from getrusage);
  4. checks both computed the same first-step loss (relative difference printed; both are the mean
     cross-entropy over the same target tokens, with the aux loss off).
For ESFT, transformers fuses each layer's experts into 3-D tensors: the whole tensors get gradients and the
unselected experts' slices are zeroed before AdamW (weight decay 0 there, so they do not move).

    swift build -c release
    python3 scripts/bench_vs_torch.py [--configs small,medium] [--modes esft,full] [--compute fp32,bf16]
                                      [--batch 4] [--seq 256] [--steps 4] [--reps 2] [--threads 2]

`--compute bf16` runs esft with `--gemm onednn --compute bf16` on a bf16-stored model (frozen products in
bf16, fp32 accumulation) and transformers under torch.autocast(bfloat16). Prints a Markdown table, with
both systems' model GFLOP/s (esft's summary.json `modelFLOPsPerStep` ÷ step time: the same FLOPs for both)
and esft's MFU against the GEMM peak of the backend it ran (`esft bench --sgemm 2048`, measured after the runs).
"""
import argparse, json, os, resource, signal, statistics, subprocess, sys, tempfile

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
esft = os.path.join(root, ".build", "release", "esft")

TORCH_STEP = r'''
import json, resource, sys, time, torch
from transformers import DeepseekV2ForCausalLM
a = json.loads(sys.argv[1])
torch.set_num_threads(a["threads"]); torch.manual_seed(0)
m = DeepseekV2ForCausalLM.from_pretrained(a["hf"], dtype=torch.float32)
m.set_attn_implementation("eager")
m.train()
ids = torch.tensor(a["ids"]); labels = torch.tensor(a["labels"])
masks = {}
for n, p in m.named_parameters():
    p.requires_grad_(False)
if a["mode"] == "full":
    params = [p for p in m.parameters()]
    for p in params: p.requires_grad_(True)
else:
    params = []
    for layer, chosen in a["experts"].items():
        for n, p in m.named_parameters():
            if n.startswith(f"model.layers.{layer}.mlp.experts.") and p.dim() == 3:
                p.requires_grad_(True); params.append(p)
                mask = torch.zeros(p.shape[0], 1, 1); mask[chosen] = 1; masks[n] = (p, mask)
opt = torch.optim.AdamW(params, lr=1e-5, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0 if masks else 0.1)
times, first = [], None
for s in range(a["steps"]):
    t0 = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a["compute"] == "bf16"):
        out = m(input_ids=ids, labels=labels)
    out.loss.backward()
    for p, mask in masks.values(): p.grad.mul_(mask)
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step(); opt.zero_grad(set_to_none=True)
    times.append(time.perf_counter() - t0)
    if first is None: first = out.loss.item()
print(json.dumps({"times": times, "first_loss": first, "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
'''


def run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{r.stderr[-2000:]}")
    return r.stdout


_peaks = {}
def peaks(compute, threads):
    """The GEMM peak esft's MFU is stated against: 2048³ through esft's GEMM layer at the same threads and
    backend (fp32 sgemm with OpenBLAS; with bf16, oneDNN's bf16×bf16→fp32 product), GFLOP/s."""
    if (compute, threads) not in _peaks:
        extra = ["--gemm", "onednn", "--compute", "bf16"] if compute == "bf16" else []
        out = run([esft, "bench", "--sgemm", "2048", "--threads", str(threads), *extra])
        _peaks[compute, threads] = float(out.split(":")[1].split("GFLOP/s")[0])
    return _peaks[compute, threads]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default="small")
    p.add_argument("--modes", default="esft,full")
    p.add_argument("--compute", default="fp32")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for cfg in a.configs.split(","):
            cfg_path = os.path.join(root, "configs", f"{cfg}.json")
            config = json.load(open(cfg_path))
            for compute in a.compute.split(","):
                model, hf = os.path.join(tmp, f"{cfg}-{compute}"), os.path.join(tmp, f"{cfg}-{compute}-hf")
                run([esft, "init", cfg_path, model, "--seed", "1", "--dtype", "bf16" if compute == "bf16" else "fp32"])
                run([esft, "export", model, hf])
                # Exactly B rows: text samples of T-2 bytes (BOS + text + EOS fill a row).
                jsonl, data = os.path.join(tmp, f"{cfg}.jsonl"), os.path.join(tmp, f"{cfg}-{compute}.h5")
                with open(jsonl, "w") as f:
                    for r in range(a.batch):
                        f.write(json.dumps({"text": "".join(chr(97 + (r * 7 + i * 13) % 26) for i in range(a.seq - 2))}) + "\n")
                run([esft, "data", "prepare", "--tokenizer", "bytes", "--input", jsonl, "--seq-len", str(a.seq), "--out", data,
                     "--validation-fraction", "0", "--model", model])
                import h5py
                with h5py.File(data, "r") as h:
                    ids, labels = h["input_ids"][:].tolist(), h["labels"][:].tolist()
                moe = [l for l in range(config["num_hidden_layers"]) if l >= config["first_k_dense_replace"]]
                experts = {str(l): list(range(6)) for l in moe}
                cfg_file = os.path.join(tmp, f"{cfg}-experts.json")
                json.dump({"experts": experts, "shared_experts": False, "non_expert_modules": False}, open(cfg_file, "w"))
                for mode in a.modes.split(","):
                    ours, theirs = [], []
                    for rep in range(a.reps):
                        out = os.path.join(tmp, f"run-{cfg}-{compute}-{mode}-{rep}")
                        sel = ["--full"] if mode == "full" else ["--experts", cfg_file]
                        extra = ["--gemm", "onednn", "--compute", "bf16"] if compute == "bf16" else []
                        run([esft, "train", "--model", model, "--data", data, *sel, "--out", out, "--steps", str(a.steps),
                             "--batch-rows", str(a.batch), "--threads", str(a.threads), "--lr", "1e-5", *extra])
                        metrics = [json.loads(l) for l in open(os.path.join(out, "metrics.jsonl"))]
                        summary = json.load(open(os.path.join(out, "summary.json")))
                        flops = summary["modelFLOPsPerStep"]
                        ours.append({"step": statistics.median(m["step_seconds"] for m in metrics[1:]), "first": metrics[0]["loss"],
                                     "rss": summary["memoryPerRank"][0]["peakRSSBytes"],
                                     "anon": summary["memoryPerRank"][0]["anonymousBytes"]})
                        arg = json.dumps({"hf": hf, "ids": ids, "labels": labels, "mode": mode, "experts": {k: v for k, v in experts.items()},
                                          "steps": a.steps, "threads": a.threads, "compute": compute})
                        t = json.loads(run([sys.executable, "-c", TORCH_STEP, arg]).strip().splitlines()[-1])
                        theirs.append({"step": statistics.median(t["times"][1:]), "first": t["first_loss"], "rss": t["peak_rss"]})
                    tokens = a.batch * a.seq
                    e, h = statistics.median(x["step"] for x in ours), statistics.median(x["step"] for x in theirs)
                    rows.append((cfg, mode, compute, tokens / h, tokens / e, h / e, ours[0]["first"], theirs[0]["first"],
                                 max(x["rss"] for x in theirs), max(x["rss"] for x in ours), max(x["anon"] for x in ours),
                                 flops / e, flops / h, peaks(compute, a.threads)))
                    print(f"{cfg} {mode} {compute}: transformers {tokens / h:.0f} tokens/s, esft {tokens / e:.0f} tokens/s", file=sys.stderr)
    print(f"| model | mode | compute | transformers tokens/s | esft tokens/s | esft ÷ transformers | first loss esft / transformers (rel. diff) | peak RSS transformers | esft peak RSS (anonymous) | model GFLOP/s esft / transformers | GEMM peak | esft MFU |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for cfg, mode, compute, th, us, ratio, le, lt, rt, re_, an, fe, ft, peak in rows:
        print(f"| {cfg} | {mode} | {compute} | {th:.0f} | {us:.0f} | {ratio:.2f}× | {le:.6f} / {lt:.6f} ({abs(le - lt) / lt:.1e}) | "
              f"{rt / 2**30:.2f} GiB | {re_ / 2**30:.2f} GiB ({an / 2**30:.2f}) | {fe / 1e9:.1f} / {ft / 1e9:.1f} | {peak:.1f} | {100 * fe / 1e9 / peak:.0f}% |")


if __name__ == "__main__":
    # SIGTERM (kill, a job scheduler) unwinds like an error: subprocess.run kills the running child and the
    # temporary directory (models of up to several GB) is removed.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(f"bench_vs_torch: stopped by signal {signum}"))
    main()

#!/usr/bin/env python3
"""Data for scripts/experiments.sh, from ../shared/esft-reference (no downloads): per task a chat JSONL of
training records and one of held-out records (every 10th record), (at most 100), plus the pretraining mixture of all four
tasks' training records (interleaved in a fixed order) and the first N intent eval records.

intent and law come from datasets/train (the reference's training files); summary and translation have no
training file in the reference material, so their eval records (a few-shot prompt and raw_answers[0]) become
chat records: the prompt without its "User: " prefix and "\\n\\nAssistant:" suffix, answered by raw_answers[0].

    experiment_data.py REFERENCE_DIR OUT_DIR [--intent-eval N] [--pretrain-tasks law,summary,translation]

--pretrain-tasks names the tasks whose training records go into the pretraining mixture (default: all
four); leaving the fine-tuning task out makes it new to the base model, as a downstream task is in the paper.
"""
import json, os, sys


def chat(user, answer):
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


def main():
    ref, out = sys.argv[1], sys.argv[2]
    n_eval = int(sys.argv[sys.argv.index("--intent-eval") + 1]) if "--intent-eval" in sys.argv else 30
    pretrain = sys.argv[sys.argv.index("--pretrain-tasks") + 1].split(",") if "--pretrain-tasks" in sys.argv \
        else ["intent", "law", "summary", "translation"]
    os.makedirs(out, exist_ok=True)
    tasks = {}
    for task in ("intent", "law"):
        with open(os.path.join(ref, "datasets", "train", f"{task}.jsonl"), encoding="utf-8") as f:
            tasks[task] = [json.loads(l) for l in f if l.strip()]
    for task in ("summary", "translation"):
        recs = []
        with open(os.path.join(ref, "datasets", "eval", f"{task}.jsonl"), encoding="utf-8") as f:
            for l in f:
                if not l.strip():
                    continue
                r = json.loads(l)
                p = r["prompt"]
                p = p[len("User: "):] if p.startswith("User: ") else p
                p = p[: -len("\n\nAssistant:")] if p.endswith("\n\nAssistant:") else p
                recs.append(chat(p, r["raw_answers"][0]))
        tasks[task] = recs
    mixture = []
    for task, recs in tasks.items():
        train = [r for i, r in enumerate(recs) if i % 10 != 9]
        held = [r for i, r in enumerate(recs) if i % 10 == 9][:100]  # at most 100: evaluation time
        for name, part in (("train", train), ("heldout", held)):
            with open(os.path.join(out, f"{task}.{name}.jsonl"), "w", encoding="utf-8") as f:
                for r in part:
                    f.write(json.dumps({"messages": r["messages"]}, ensure_ascii=False) + "\n")
        if task in pretrain:
            mixture.append(train)
        print(f"{task}: {len(train)} train, {len(held)} held-out records{' (in the pretraining mixture)' if task in pretrain else ''}")
    # Round-robin over the tasks until each is used up: every stretch of the mixture holds all four.
    with open(os.path.join(out, "mixture.jsonl"), "w", encoding="utf-8") as f:
        for i in range(max(map(len, mixture))):
            for part in mixture:
                if i < len(part):
                    f.write(json.dumps({"messages": part[i]["messages"]}, ensure_ascii=False) + "\n")
    with open(os.path.join(ref, "datasets", "eval", "intent.jsonl"), encoding="utf-8") as f, \
            open(os.path.join(out, "intent.eval.jsonl"), "w", encoding="utf-8") as g:
        for i, l in enumerate(f):
            if i >= n_eval:
                break
            g.write(l)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""The ESFT reference's data preparation, re-implemented independently of esft, to check
`esft data prepare --recipe reference` row for row (Tests/ESFTDataTests/ReferenceRecipeTests.swift).

It follows deepseek-ai/ESFT `utils.py` (get_formatted_input_and_target, get_examples_from_buffer_pad) and
`train.py` (random.seed(seed) right before packing; the 98/2 random_split), with the Hugging Face
`tokenizers` library in place of AutoTokenizer (same fast tokenizer, no torch). Writes the rows as raw
little-endian int32 files PREFIX.ids.i32 and PREFIX.labels.i32 and prints a JSON summary.

    reference_packing.py --tokenizer tokenizer.json --input task.jsonl --seq-len N --bos ID --eos ID --pad ID
                         --out PREFIX [--seed 5934875] [--ratio 0.2]
"""
import argparse
import array
import json
import random
import sys

IGNORE = -100


def formatted_sample(messages, encode, bos, eos):
    """BOS, then per message: 'User: {q}\\n\\n' + 'Assistant:' masked; ' {a}' + EOS trained unless mask == 1.
    Contents are str()-ed and stripped; BOS is its own label."""
    ids, labels = [bos], [bos]
    for message in messages:
        if message["role"] == "user":
            piece = encode("User: " + str(message["content"]).strip() + "\n\n" + "Assistant:")
            ids += piece
            labels += [IGNORE] * len(piece)
        elif message["role"] == "assistant":
            piece = encode(" " + str(message["content"]).strip()) + [eos]
            ids += piece
            labels += [IGNORE] * len(piece) if message.get("mask", 0) == 1 else piece
        else:
            raise SystemExit(f"unknown role {message['role']!r}")
    return ids, labels


def pack(samples, seq_len, ratio, pad):
    """Samples in order; one that overflows the row keeps its last tokens and fills it; a sample added to a
    non-empty row loses its first token with probability `ratio` (one random() draw each); the final row is
    padded (and, as in the reference, emitted even when it holds nothing)."""
    rows_ids, rows_labels = [], []
    row_ids, row_labels = [], []
    for ids, labels in samples:
        free = seq_len - len(row_ids)
        if len(ids) > free:
            ids, labels = ids[-free:], labels[-free:]
        if len(row_ids) > 0 and random.random() < ratio:
            ids, labels = ids[1:], labels[1:]
        row_ids += ids
        row_labels += labels
        if len(row_ids) >= seq_len:
            assert len(row_ids) == seq_len
            rows_ids.append(row_ids)
            rows_labels.append(row_labels)
            row_ids, row_labels = [], []
    fill = seq_len - len(row_ids)
    rows_ids.append(row_ids + [pad] * fill)
    rows_labels.append(row_labels + [IGNORE] * fill)
    return rows_ids, rows_labels


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--input", required=True)
    p.add_argument("--seq-len", type=int, required=True)
    p.add_argument("--bos", type=int, required=True)
    p.add_argument("--eos", type=int, required=True)
    p.add_argument("--pad", type=int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=5934875)
    p.add_argument("--ratio", type=float, default=0.2)
    a = p.parse_args()
    try:
        from tokenizers import Tokenizer
    except ImportError:
        print("reference_packing: the 'tokenizers' package is missing (pip install tokenizers)", file=sys.stderr)
        sys.exit(3)
    tokenizer = Tokenizer.from_file(a.tokenizer)
    encode = lambda text: tokenizer.encode(text, add_special_tokens=False).ids
    with open(a.input, encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()]
    samples = [formatted_sample(r["messages"], encode, a.bos, a.eos) for r in records]
    random.seed(a.seed)
    rows_ids, rows_labels = pack(samples, a.seq_len, a.ratio, a.pad)
    for suffix, rows in (("ids", rows_ids), ("labels", rows_labels)):
        flat = array.array("i", (t for row in rows for t in row))
        if sys.byteorder != "little":
            flat.byteswap()
        with open(f"{a.out}.{suffix}.i32", "wb") as f:
            flat.tofile(f)
    n = len(rows_ids)
    empty_final = all(t == IGNORE for t in rows_labels[-1]) and all(t == a.pad for t in rows_ids[-1])
    print(json.dumps({"samples": len(samples), "rows": n, "train_rows": int(n * 0.98),
                      "final_row_empty": empty_final}))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Generate the tokenizer parity fixtures used by Tests/ESFTDataTests/TokenizerTests.swift.

Trains a small byte-level BPE tokenizer with the Hugging Face `tokenizers` library on the ESFT
training sets, with a DeepSeek-like pre-tokenizer, and records the ids that library produces for
a few thousand strings. The Swift `HFTokenizer` must reproduce them exactly.

Outputs (under Tests/Fixtures/tokenizer/):
  tokenizer.json           the trained tokenizer (vocab 6000)
  expected.jsonl           {"text", "ids"} per line, ids = encode(text, add_special_tokens=False)
  variants/<name>.json     small tokenizers exercising other features (same trained merges,
                           other normalizers / pre-tokenizers / added-token flags / post-processors)
  variants/<name>.jsonl    {"text", "ids", "ids_special"} (ids_special: add_special_tokens=True)

Usage: python3 scripts/gen_tokenizer_fixture.py [--datasets DIR] [--out DIR]
Deterministic: fixed seeds, fixed input order, single-threaded training.
"""
import argparse
import json
import os
import random
import sys

os.environ.setdefault("RAYON_NUM_THREADS", "1")  # before importing tokenizers: deterministic training
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tokenizers import (AddedToken, Regex, Tokenizer, decoders, models,  # noqa: E402
                        normalizers, pre_tokenizers, processors, trainers)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
THINK = "<think>"  # the non-special added token

# DeepSeek-like pre-tokenizer: a Sequence of Split(Isolated) rules, then ByteLevel without its own
# regex. Chosen so Oniguruma (what `tokenizers` uses) and ICU (NSRegularExpression) agree: no `$`/`^`
# (line anchors in Oniguruma, input anchors in ICU), no `.`, lookahead only as `(?!\S)`, which both
# evaluate inside the piece being split.
SPLIT_RULES = [
    # Newline runs together with the whitespace before them (DeepSeek-V3 style `\s*[\r\n]+`).
    r"\s*[\r\n]+",
    # Digits in groups of up to three, left to right (DeepSeek-V3 style): "12345" -> "123", "45".
    r"\p{N}{1,3}",
    # CJK runs: kana, Han (BMP, ext. A, compatibility, astral ext. B..), Hangul syllables.
    r"[\x{3040}-\x{30FF}\x{3400}-\x{4DBF}\x{4E00}-\x{9FFF}\x{AC00}-\x{D7AF}\x{F900}-\x{FAFF}"
    r"\x{20000}-\x{2FA1F}]+",
    # Letters (with combining marks) with at most one leading space or punctuation character.
    r"[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+",
    # Punctuation and symbol runs with an optional leading space.
    r" ?[\p{P}\p{S}]+",
    # Whitespace: a run not followed by a non-space (leaves one space for the next word), else any run.
    r"\s+(?!\S)|\s+",
]


def deepseek_like_pre_tokenizer():
    rules = [pre_tokenizers.Split(Regex(r), "isolated", invert=False) for r in SPLIT_RULES]
    rules.append(pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False))
    return pre_tokenizers.Sequence(rules)


def read_contents(path):
    """Message contents of a {"messages": [{"role", "content"}, ...]} jsonl file, in file order."""
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            for m in json.loads(line)["messages"]:
                out.append(m["content"])
    return out


def read_eval_prompts(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line)["prompt"] for line in f]


def train_main(texts):
    tok = Tokenizer(models.BPE())
    tok.normalizer = None
    tok.pre_tokenizer = deepseek_like_pre_tokenizer()
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=6000, min_frequency=2, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte is reachable
        special_tokens=[AddedToken(BOS, special=True, normalized=False),
                        AddedToken(EOS, special=True, normalized=False)])
    tok.train_from_iterator(texts, trainer)
    tok.add_tokens([AddedToken(THINK, special=False)])
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", special_tokens=[(BOS, tok.token_to_id(BOS))])
    return tok


# ---------------------------------------------------------------------------------------------
# Test strings

def synthetic_strings(rng):
    s = ["", " ", "  ", "\n", "\n\n", "\n\n\n\n", "\r\n", "\r\n\r\n", "\t", "\t\t", " \t \n ",
         "a", "A", "0", "é", "中", "👍", "hello", "Hello, world!", "  leading", "trailing   ",
         "   ", "a  b   c    d", "end with newline\n", "\nstart with newline", "x \n y \n\n z",
         "tab\tseparated\tvalues", "\t\tindented", "mixed \t \n \r\n whitespace  ",
         "line1\r\nline2\rline3\n", "   \n   \n", "a\u000bb\u000cc\u0085d\u2028e\u2029f",
         "nbsp\u00a0here\u3000ideographic\u2003em\u200bzero-width",
         "the year 2024 and 1999", "3.14159265358979", "1,234,567.89", "+86 138-0013-8000",
         "1234567890123456789012345678901234567890", "007 0 00 000 0000 00000",
         "abc123def4567ghi", "v1.2.3-beta.4", "0x1F 0b1010 1e-9", "٣٤٥ ۱۲۳ १२३ ⅣⅫ ½ ²³",
         "２０２４年１２月３１日", "第1章 共12节", "价格：¥1,299.00元", "12:30:45.678",
         "emoji 👍🏽 ok", "👨‍👩‍👧‍👦 family", "🇨🇳🇺🇸🇯🇵 flags", "1️⃣2️⃣#️⃣ keycaps",
         "❤️ ♥ ☺️", "🏳️‍🌈🏴‍☠️", "🙂🙃😀😃😄😁", "𝔾𝕠𝕠𝕕 𝕞𝕠𝕣𝕟𝕚𝕟𝕘", "𠀀𠀁𪚥 astral Han",
         "café", "cafe\u0301", "naïve résumé", "Ångström", "A\u030a", "Tiếng Việt có dấu",
         "Z̤͔ͧ̑̓ä͖̭̈̇lͮ̒ͫǧ̗͚̚o̙̔ͮ̇͐̇", "ﬁ ﬂ ﬃ ligatures", "Ⅻ ① ㈱ ㌔", "Ａｂｃ　ｆｕｌｌｗｉｄｔｈ",
         "Привет, мир!", "Γειά σου Κόσμε", "مرحبا بالعالم", "שלום עולם", "नमस्ते दुनिया",
         "สวัสดีชาวโลก", "こんにちは世界", "안녕하세요 세계", "混合English和中文text",
         "I'm you're he's we've they'd I'll", "don't DON'T", "it's 'quoted' \"double\"",
         "«guillemets» „Anführung“ ‘single’ “double”", "…—–•·", "<html><body>&nbsp;</body></html>",
         "path/to/file.txt C:\\Users\\name", "https://example.com/a?b=c&d=e#f", "user@example.com",
         "$100 €200 £300 ¥400", "100% 50‰", "a+b=c; d-e*f/g", "=== --- *** ### ```",
         BOS, EOS, THINK, BOS + EOS, BOS + "Hello" + EOS, "Hello" + BOS + "world",
         "A" + THINK + "B", " " + BOS + " ", "\n" + EOS + "\n", BOS + BOS,
         "User: hi" + EOS + "Assistant: hello" + EOS, "<｜begin▁of", "▁of▁sentence｜>",
         "<think", "think>", "<<think>>", "<think></think>", THINK + " " + THINK,
         "请分析下面这句话的意图" + EOS, BOS + "答案：" + THINK + "嗯\n"]
    code = [
        "def add(a, b):\n    return a + b\n",
        "for i in range(10):\n\tprint(i ** 2)\n",
        "if (x != 0 && y >= 1) { return x / y; }",
        "let xs: [Int32] = [1, 2, 3]\nxs.map { $0 * 2 }",
        "func encode(_ text: String) -> [Int32] {\n    return Array(text.utf8).map(Int32.init)\n}",
        "#include <stdio.h>\nint main(void) {\n    printf(\"%d\\n\", 42);\n}",
        '{"intent": "Alarm-Update", "slots": {"datetime_time": "8点"}}',
        "SELECT id, name FROM users WHERE age > 30 ORDER BY name;",
        "    indented four\n        indented eight\n",
        "x=1;y=2;z=x+y  # comment with   spaces",
        "lambda x: x[::-1]  # reversed",
        "std::vector<int> v{1,2,3};",
        "<div class=\"a\">text</div>\n<!-- comment -->",
        "a_b_c __init__ CamelCaseName snake_case_name",
        "    \n\t\n  \n",
    ]
    s += code
    # Digits and numbers.
    for _ in range(120):
        n = rng.randint(1, 40)
        s.append("".join(rng.choice("0123456789") for _ in range(n)))
    for _ in range(60):
        s.append(f"{rng.randint(0, 10**rng.randint(1, 12))}.{rng.randint(0, 999)} "
                 f"and {rng.randint(-10**6, 10**6)} 共{rng.randint(1, 99999)}元")
    # Runs of spaces, tabs and newlines between words.
    ws = [" ", "  ", "   ", "    ", "\t", "\t\t", "\n", "\n\n", "\n\n\n", "\r\n", " \n", "\n ",
          " \t ", "\u3000", "\u00a0", "  \n\n  "]
    words = ["hello", "world", "中文", "测试", "x", "42", "a.b", "!", "(", "👍", "é", "THINK"]
    for _ in range(150):
        k = rng.randint(1, 8)
        parts = []
        for _ in range(k):
            parts.append(rng.choice(ws))
            parts.append(rng.choice(words))
        if rng.random() < 0.5:
            parts.append(rng.choice(ws))
        s.append("".join(parts))
    return s


# Code point pools for fuzz strings (assigned characters, no surrogates).
POOLS = [
    (0x20, 0x7E), (0x09, 0x0D), (0xA0, 0xFF), (0x100, 0x17F), (0x300, 0x36F), (0x370, 0x3FF),
    (0x400, 0x4FF), (0x5D0, 0x5EA), (0x620, 0x64A), (0x660, 0x669), (0x900, 0x97F),
    (0xE01, 0xE3A), (0x1100, 0x1112), (0x2000, 0x206F), (0x2160, 0x2188), (0x2190, 0x21FF),
    (0x2460, 0x24FF), (0x3000, 0x303F), (0x3040, 0x30FF), (0x4E00, 0x9FA5), (0xAC00, 0xD7A3),
    (0xFF01, 0xFF5E), (0x1F300, 0x1F64F), (0x1F900, 0x1F9FF), (0x1D400, 0x1D4FF),
    (0x20000, 0x2A6D6), (0x1F1E6, 0x1F1FF), (0xFE00, 0xFE0F), (0x200D, 0x200D), (0x85, 0x85),
]


def fuzz_string(rng):
    n = rng.randint(1, 30)
    out = []
    for _ in range(n):
        lo, hi = rng.choice(POOLS)
        out.append(chr(rng.randint(lo, hi)))
        if rng.random() < 0.15:
            out.append(rng.choice([" ", "  ", "\n", "\t", "\r\n"]))
    return "".join(out)


def dataset_sample(rng, contents, k, max_chars):
    picked = rng.sample(contents, min(k, len(contents)))
    out = []
    for t in picked:
        if len(t) > max_chars:  # keep the fixture small: cut long cases at a random point
            start = rng.randint(0, len(t) - max_chars)
            t = t[start:start + max_chars]
        out.append(t)
    return out


def main_cases(rng, intent, law, english):
    cases = []
    cases += dataset_sample(rng, intent, 700, 400)
    cases += dataset_sample(rng, law, 450, 300)
    cases += dataset_sample(rng, english, 120, 300)
    cases += synthetic_strings(rng)
    cases += [fuzz_string(rng) for _ in range(400)]
    # Whole lines with special tokens around and inside them.
    for t in dataset_sample(rng, intent, 60, 200):
        cut = rng.randint(0, len(t))
        cases.append(BOS + t[:cut] + rng.choice([EOS, THINK, BOS]) + t[cut:] + EOS)
    seen, unique = set(), []
    for c in cases:
        if c not in seen:
            seen.add(c)
            unique.append(c)
    return unique


def english_lines(eval_dir):
    """English sentences from the translation eval prompts (the train sets are mostly Chinese)."""
    out = []
    for p in read_eval_prompts(os.path.join(eval_dir, "translation.jsonl")):
        for line in p.split("\n"):
            if line.startswith("Translation: "):
                out.append(line[len("Translation: "):])
    return out


# ---------------------------------------------------------------------------------------------
# Variants: the same trained model under other configurations.

def variant_configs(main_json):
    """(name, dict) pairs; each dict is a full tokenizer.json built from a small trained model."""
    small = json.loads(main_json)
    model = small["model"]
    # Keep the first 700 merges and the vocab they need: the files stay small.
    merges = model["merges"][:700]
    keep = set(pre_tokenizers.ByteLevel.alphabet())
    for a, b in merges:
        keep.update([a, b, a + b])
    vocab = {}
    for tok in sorted(keep, key=lambda t: model["vocab"][t]):
        vocab[tok] = len(vocab)
    model = dict(model, vocab=vocab, merges=merges)

    def base(pre, normalizer=None, added=(), post=None):
        d = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": [],
             "normalizer": normalizer, "pre_tokenizer": pre, "post_processor": post,
             "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                         "use_regex": True},
             "model": json.loads(json.dumps(model))}
        next_id = len(vocab)
        for content, special, flags in added:
            entry = {"id": next_id, "content": content, "single_word": False, "lstrip": False,
                     "rstrip": False, "normalized": not special, "special": special}
            entry.update(flags)
            d["added_tokens"].append(entry)
            next_id += 1
        return d

    def byte_level(prefix, use_regex):
        return {"type": "ByteLevel", "add_prefix_space": prefix, "trim_offsets": True,
                "use_regex": use_regex}

    def split(pattern, behavior, invert=False, kind="Regex"):
        return {"type": "Split", "pattern": {kind: pattern}, "behavior": behavior, "invert": invert}

    def template(single, specials):
        return {"type": "TemplateProcessing", "single": single, "pair": single,
                "special_tokens": {t: {"id": t, "ids": [i], "tokens": [t]} for t, i in specials}}

    n = len(vocab)
    out = []
    # GPT-2 / RoBERTa style: ByteLevel does the regex split and adds a prefix space; NFC; merges
    # in the legacy "a b" string form.
    d = base(byte_level(True, True), {"type": "NFC"},
             added=[("<|endoftext|>", True, {})],
             post={"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                   "use_regex": True})
    d["model"]["merges"] = [f"{a} {b}" for a, b in d["model"]["merges"]]
    out.append(("gpt2_prefix_space", d))
    # NFKC in a Sequence, Digits(individual) before the GPT-2 regex (with a prefix space for every
    # piece Digits leaves), ignore_merges, BOS/EOS template.
    d = base({"type": "Sequence", "pretokenizers": [
                {"type": "Digits", "individual_digits": True}, byte_level(True, True)]},
             {"type": "Sequence", "normalizers": [{"type": "NFKC"}]},
             added=[("<s>", True, {}), ("</s>", True, {})],
             post=template([{"SpecialToken": {"id": "<s>", "type_id": 0}},
                            {"Sequence": {"id": "A", "type_id": 0}},
                            {"SpecialToken": {"id": "</s>", "type_id": 0}}],
                           [("<s>", n), ("</s>", n + 1)]))
    d["model"]["ignore_merges"] = True
    out.append(("nfkc_digits_ignore_merges", d))
    # Every Split behavior, invert, a String pattern, grouped digits, and the line anchors `^`, `$`
    # and `.` whose Oniguruma meaning differs from ICU's (the Swift side rewrites them).
    d = base({"type": "Sequence", "pretokenizers": [
                split("--", "Removed", kind="String"),
                split(r"^\s*#|;$", "Isolated"),
                split(r"\s+", "MergedWithPrevious"),
                split(r"[,:]", "MergedWithNext"),
                {"type": "Digits", "individual_digits": False},
                split(r"[aeiou]+", "Contiguous", invert=True),
                split(r"x.y|\p{Lu}\p{Ll}*", "Isolated"),
                split(r"[\w\-]+@\w+|\W{2,}|\w[²³¹]", "Isolated"),
                byte_level(False, False)]},
             {"type": "Sequence", "normalizers": [{"type": "NFD"}, {"type": "NFC"}]})
    out.append(("split_behaviors", d))
    # Added-token flags: single_word, lstrip/rstrip, normalized (matched after NFKC), overlapping
    # contents (longest match first), special vs not.
    d = base(byte_level(False, True), {"type": "NFKC"},
             added=[("<|sep|>", True, {}), ("<|s", False, {"normalized": False}),
                    ("foo", False, {"single_word": True}),
                    ("<mask>", True, {"lstrip": True, "rstrip": True}),
                    ("ﬁx", False, {"normalized": True}),
                    ("bar", False, {"normalized": False}),
                    ("bar baz", False, {"normalized": False})],
             post=template([{"SpecialToken": {"id": "<|sep|>", "type_id": 0}},
                            {"Sequence": {"id": "A", "type_id": 0}}], [("<|sep|>", n)]))
    out.append(("added_token_flags", d))
    return out


VARIANT_EXTRA = [
    "foo foobar barfoo foo.", "foo", " foo ", "xfoo", "foo_bar", "éfoo", "1foo",
    "a <mask> b", "a<mask>b", "a  <mask>  b", "<mask>\t\n", "\u3000<mask>\u3000",
    "<|sep|><|s<|se", "<|sep|x", "fix ﬁx fi x FIX", "bar baz bar  baz barbaz", "Bar",
    "  # comment;\n#x;", "a--b----c", "x_y xAy x\ny", "Hello World HTML iPhone",
    "one, two: three,four", "12,345:678", "aeiouxyz", "", " ", "\n", "Ⅻ①ﬁ２０", "e\u0301\u0323",
    "<|endoftext|>", "<s>hi</s>", "<s> </s>", "a<|endoftext|>b c", " <|endoftext|> x1y22",
    # Normalization corner cases: a compatibility decomposition whose marks must be reordered,
    # supplementary characters before combining marks, characters newer than Unicode 9.0 (the
    # Hugging Face normalization tables leave those alone).
    "\u0385\u0359", "\U000E0069\u0301 \U000E0049\u0323", "a\u1acd\u05a7", "\u0301\u0c3c\u32ff x\u07fd\u0316",
    "\U0001D15E\u0301 \U00011131\U00011127", "\u1100\u1161\u11a8 \uac00\u11a8",
    # \w and \W, whose ICU and Oniguruma meanings differ slightly.
    "x² y³ z¹ ¼½¾ a\u200cb\u200dc", "user-name@example !! ...?", "a_b-c@d__e ²@³",
]


def encode_ids(tok, text, special):
    return tok.encode(text, add_special_tokens=special).ids


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", default=os.path.join(ROOT, "..", "shared", "esft-reference",
                                                       "datasets"))
    ap.add_argument("--out", default=os.path.join(ROOT, "Tests", "Fixtures", "tokenizer"))
    args = ap.parse_args()
    train_dir = os.path.join(args.datasets, "train")
    if not os.path.isdir(train_dir):
        sys.exit(f"datasets not found at {args.datasets}")
    intent = read_contents(os.path.join(train_dir, "intent.jsonl"))
    law = read_contents(os.path.join(train_dir, "law.jsonl"))
    english = english_lines(os.path.join(args.datasets, "eval"))

    tok = train_main(intent + law)
    os.makedirs(args.out, exist_ok=True)
    tok.save(os.path.join(args.out, "tokenizer.json"), pretty=False)  # compact: fixture size
    # Reload what we wrote: the expected ids must come from the file the tests read.
    tok = Tokenizer.from_file(os.path.join(args.out, "tokenizer.json"))

    rng = random.Random(20240611)
    cases = main_cases(rng, intent, law, english)
    with open(os.path.join(args.out, "expected.jsonl"), "w", encoding="utf-8") as f:
        for text in cases:
            ids = encode_ids(tok, text, False)
            assert tok.decode(ids, skip_special_tokens=False) == text, repr(text)
            f.write(json.dumps({"text": text, "ids": ids}, ensure_ascii=False) + "\n")
    print(f"expected.jsonl: {len(cases)} lines, vocab {tok.get_vocab_size()}")

    vdir = os.path.join(args.out, "variants")
    os.makedirs(vdir, exist_ok=True)
    vrng = random.Random(7)
    vcases = (VARIANT_EXTRA + synthetic_strings(vrng)[:200] + [fuzz_string(vrng) for _ in range(60)]
              + dataset_sample(vrng, intent, 25, 160) + dataset_sample(vrng, english, 25, 160))
    for name, d in variant_configs(tok.to_str()):
        text_json = json.dumps(d, ensure_ascii=False)
        vt = Tokenizer.from_str(text_json)
        with open(os.path.join(vdir, name + ".json"), "w", encoding="utf-8") as f:
            f.write(text_json)
        with open(os.path.join(vdir, name + ".jsonl"), "w", encoding="utf-8") as f:
            for text in vcases:
                f.write(json.dumps({"text": text, "ids": encode_ids(vt, text, False),
                                    "ids_special": encode_ids(vt, text, True)},
                                   ensure_ascii=False) + "\n")
        print(f"variants/{name}: {len(vcases)} lines")


if __name__ == "__main__":
    main()

#!/usr/bin/env bash
# The paper's claims (ESFT, arXiv 2407.01906) checked on a small DeepSeek-V2-style MoE we pretrain ourselves
# on the ESFT reference's four tasks (docs/experiments.md has the results and what they say). Not in CI.
#   1. data: per task train / held-out chat JSONL, the four-task pretraining mixture (scripts/experiment_data.py)
#   2. pretrain configs/${EXP_CONFIG} in full on the mixture, byte tokenizer
#   3. score every task on the pretrained model; select ESFT-Token (p 0.2) and ESFT-Gate (p 0.1) experts per
#      task; concentration and overlap of the tasks' expert sets (paper Fig. 2)
#   4. fine-tune on intent: FFT, ESFT-Token, ESFT-Gate, ESFT-Token + shared experts, ESFT-Token + non-expert
#      modules (paper Table 3), the same steps and rows for each
#   5. evaluate the pretrained model (vanilla) and each fine-tune: held-out loss on all four tasks, intent
#      exact-match on the reference's eval prompts; trainable parameters, stored bytes, wall time
#   6. write the tables (scripts/experiment_tables.py)
# Sizes come from the environment (defaults: about 25 minutes on 2 cores):
#   EXP_DIR (./experiments-run) EXP_CONFIG (small.json) EXP_SEQ (256) EXP_ROWS (8) EXP_PRETRAIN_STEPS (300)
#   EXP_FT_STEPS (100) EXP_RANKS (2) EXP_INTENT_EVAL (10) EXP_MAX_NEW (128)
#   EXP_PRETRAIN_TASKS (law,summary,translation: intent, the fine-tuning task, is new to the base model)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v swift >/dev/null 2>&1 || export PATH="/opt/swift/usr/bin:$PATH"
reference="../shared/esft-reference"
[ -d "$reference/datasets" ] || { echo "experiments: $reference/datasets is needed (the ESFT reference's data)" >&2; exit 1; }
scripts/setup.sh >/dev/null
esft="$(pwd)/.build/release/esft"
work="${EXP_DIR:-$(pwd)/experiments-run}"
config="configs/${EXP_CONFIG:-small.json}"
seq="${EXP_SEQ:-256}" rows="${EXP_ROWS:-8}" pre_steps="${EXP_PRETRAIN_STEPS:-300}" ft_steps="${EXP_FT_STEPS:-100}"
ranks="${EXP_RANKS:-2}" n_eval="${EXP_INTENT_EVAL:-10}" max_new="${EXP_MAX_NEW:-128}"
pretrain_tasks="${EXP_PRETRAIN_TASKS:-law,summary,translation}"
mkdir -p "$work"
if [ "$(id -u)" -eq 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
mpi=(mpirun -n "$ranks" --oversubscribe)
step() { echo; echo "== $(date -u +%H:%M:%S) $*"; }

printf '{"config": "%s", "seq_len": %s, "batch_rows": %s, "pretrain_steps": %s, "finetune_steps": %s, "ranks": %s, "intent_eval_records": %s, "max_new_tokens": %s, "pretrain_tasks": "%s", "cpu": "%s"}\n' \
    "$config" "$seq" "$rows" "$pre_steps" "$ft_steps" "$ranks" "$n_eval" "$max_new" "$pretrain_tasks" \
    "$(lscpu | sed -n 's/^Model name: *//p' | head -1)" > "$work/experiment.json"

step "1. data"
python3 scripts/experiment_data.py "$reference" "$work/data" --intent-eval "$n_eval" --pretrain-tasks "$pretrain_tasks"
for t in mixture intent; do
    f="$work/data/$t.jsonl"; [ "$t" = intent ] && f="$work/data/intent.train.jsonl"
    [ -f "$work/$t.h5" ] || "$esft" data prepare --tokenizer bytes --input "$f" --seq-len "$seq" --out "$work/$t.h5" --seed 1 | tail -n 3
done
for t in intent law summary translation; do
    [ -f "$work/$t.score.h5" ] || "$esft" data prepare --tokenizer bytes --input "$work/data/$t.train.jsonl" --seq-len "$seq" \
        --out "$work/$t.score.h5" --seed 2 --validation-fraction 0 >/dev/null
done

step "2. pretrain ($config, $pre_steps steps of $rows rows × $seq tokens, $ranks ranks)"
if [ ! -f "$work/base/model.h5" ]; then
    "$esft" init "$config" "$work/init" --seed 1 --expert-shards "$ranks"
    "${mpi[@]}" "$esft" train --model "$work/init" --data "$work/mixture.h5" --full --steps "$pre_steps" --batch-rows "$rows" \
        --lr 2e-3 --schedule cosine --warmup 20 --min-lr 2e-4 --aux-alpha 0.001 --eval-every 100 --out "$work/pretrain" --threads 1 | tail -n 6
    "$esft" export "$work/init" "$work/base" --trained "$work/pretrain/trained.safetensors" --format hdf5 >/dev/null
fi

step "3. scores and expert selection per task"
mkdir -p "$work/scores" "$work/experts"
for t in intent law summary translation; do
    # 32768 tokens of samples (the reference scored 131072 of a 7B model's), or all when a task has fewer.
    if [ ! -f "$work/scores/$t.json" ]; then
        "${mpi[@]}" "$esft" score --model "$work/base" --data "$work/$t.score.h5" --tokens 32768 --out "$work/scores/$t.json" \
            --threads 1 2>/dev/null | tail -n 1 \
        || "${mpi[@]}" "$esft" score --model "$work/base" --data "$work/$t.score.h5" --tokens all --out "$work/scores/$t.json" \
            --threads 1 2>/dev/null | tail -n 1
    fi
    "$esft" select --scores "$work/scores/$t.json" --method token --threshold 0.2 --model "$work/base" --out "$work/experts/$t.token.json" >/dev/null
    "$esft" select --scores "$work/scores/$t.json" --method gate --threshold 0.1 --model "$work/base" --out "$work/experts/$t.gate.json" >/dev/null
done
"$esft" select --scores "$work/scores/intent.json" --method token --threshold 0.2 --shared-experts --model "$work/base" --out "$work/experts/intent.token+shared.json" >/dev/null
"$esft" select --scores "$work/scores/intent.json" --method token --threshold 0.2 --non-expert-modules --model "$work/base" --out "$work/experts/intent.token+nonexpert.json" >/dev/null

step "4. fine-tune on intent ($ft_steps steps each)"
ft() {  # name, then the selection arguments
    local name=$1; shift
    [ -f "$work/ft/$name/summary.json" ] && return
    mkdir -p "$work/ft"
    "${mpi[@]}" "$esft" train --model "$work/base" --data "$work/intent.h5" "$@" --steps "$ft_steps" --batch-rows "$rows" \
        --lr 1e-4 --eval-every 50 --out "$work/ft/$name" --threads 1 | tail -n 3
}
ft fft --full
ft esft-token --experts "$work/experts/intent.token.json"
ft esft-gate --experts "$work/experts/intent.gate.json"
ft esft-token+shared --experts "$work/experts/intent.token+shared.json"
ft esft-token+nonexpert --experts "$work/experts/intent.token+nonexpert.json"

step "5. evaluate"
evaluate() {  # name, then --trained FILE (or nothing for vanilla)
    local name=$1; shift
    mkdir -p "$work/eval/$name"
    for t in intent law summary translation; do
        [ -f "$work/eval/$name/$t.loss.summary.json" ] || "${mpi[@]}" "$esft" eval --model "$work/base" "$@" --tokenizer bytes \
            --data "$work/data/$t.heldout.jsonl" --metric loss --out "$work/eval/$name/$t.loss.jsonl" --threads 1 >/dev/null 2>&1
    done
    [ -f "$work/eval/$name/intent.exact.summary.json" ] || "${mpi[@]}" "$esft" eval --model "$work/base" "$@" --tokenizer bytes \
        --data "$work/data/intent.eval.jsonl" --metric exact-json --max-new-tokens "$max_new" --batch 4 \
        --out "$work/eval/$name/intent.exact.jsonl" --threads 1 >/dev/null 2>&1
    echo "$name: $(python3 -c "import json,sys; print(json.load(open('$work/eval/$name/intent.loss.summary.json'))['loss'])") intent held-out loss"
}
evaluate vanilla
for v in fft esft-token esft-gate esft-token+shared esft-token+nonexpert; do evaluate "$v" --trained "$work/ft/$v/trained.safetensors"; done

step "6. tables"
python3 scripts/experiment_tables.py "$work" | tee "$work/tables.md"

#!/bin/bash
# Submits the whole ESFT pipeline as a SLURM dependency chain: score + select → train → export, each
# job starting only when the one before it succeeded (--dependency=afterok), so a failure stops the chain
# (the later jobs stay pending with Reason=DependencyNeverSatisfied; scancel them).
#
#   cluster/esft-pipeline.sh [--wait] MODEL DATA WORK [sbatch options for score and train...]
#   cluster/esft-pipeline.sh /shared/model /shared/task.h5 /shared/run1 --nodes=4 --ntasks-per-node=1
#
# Writes WORK/select/{scores,experts}.json, WORK/train/ (esft train's outputs and checkpoints),
# WORK/export/ (a Hugging Face directory) and WORK/logs/<job name>-<job id>.log. Options for the
# commands: ESFT_SCORE_ARGS (default --tokens all), ESFT_SELECT (see esft-score.sbatch), ESFT_TRAIN_ARGS
# (e.g. "--config configs/train-esft.json --steps 500"), ESFT_EXPORT_ARGS; ESFT names the executable.
# Prints the three job ids; --wait returns when the export job has ended, with its exit status.
set -euo pipefail
wait=()
[ "${1:-}" = --wait ] && { wait=(--wait); shift; }
if (($# < 3)); then
    echo "usage: cluster/esft-pipeline.sh [--wait] MODEL DATA WORK [sbatch options...]" >&2
    exit 2
fi
model=$1 data=$2 work=$3
shift 3
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$work/logs"
read -r -a score_args <<<"${ESFT_SCORE_ARGS:-}"
read -r -a train_args <<<"${ESFT_TRAIN_ARGS:-}"
read -r -a export_args <<<"${ESFT_EXPORT_ARGS:-}"
log=(--output="$work/logs/%x-%j.log")
score=$(sbatch --parsable "${log[@]}" "$@" "$here/esft-score.sbatch" "$model" "$data" "$work/select" "${score_args[@]}")
train=$(sbatch --parsable "${log[@]}" --dependency=afterok:"$score" "$@" "$here/esft-train.sbatch" \
    "$model" "$data" "$work/select/experts.json" "$work/train" "${train_args[@]}")
echo "esft-pipeline: score+select job $score, train job $train (afterok:$score)"
# With --wait, sbatch prints the id at once and returns the export job's exit status when it ends.
status=0
sbatch --parsable "${log[@]}" --dependency=afterok:"$train" "${wait[@]}" "$here/esft-export.sbatch" \
    "$model" "$work/train" "$work/export" "${export_args[@]}" | sed 's/^/esft-pipeline: export job /' || status=$?
exit "$status"

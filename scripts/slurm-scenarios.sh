#!/usr/bin/env bash
# The SLURM scenarios Tests/ESFTClusterTests checks, run inside a cluster from scripts/slurm-cluster.sh:
#
#   scripts/slurm-cluster.sh WORK/cluster -- scripts/slurm-scenarios.sh WORK ESFT
#
# On a tiny model (configs/tiny.json, 2 expert shards) and a small byte-tokenized chat dataset, each job
# script of cluster/ is submitted with `sbatch --wait -n 2`, and the same commands run under plain
# `mpirun -n 2`; the outputs land side by side for the test to compare:
#   WORK/sbatch/{score,train,pipeline}/  and  WORK/mpirun/{score,train,export}/
#   WORK/results/<scenario>.job          `scontrol show job -o` of each job when it ended
#   WORK/results/<scenario>.status       sbatch --wait's exit status
# Requeue: esft-train.sbatch (300 steps) is interrupted twice while it trains, by `scontrol requeue` (SIGTERM to
# the ranks) and by `scancel --signal=USR1` (the script requeues itself), and must resume and finish:
#   WORK/sbatch/requeue-{term,usr1}/, WORK/mpirun/long/ (the uninterrupted run). Without checkpoints
# in this esft (`esft train --help` has no --resume), WORK/results/requeue.skip says so instead.
# Failure: a job whose rank 1 fails (esft mpi-check --fail-on-rank 1): WORK/results/failure.job.
# Stall: esft-train.sbatch with --stall-timeout 4 whose rank 1 gets SIGSTOP while it trains must end FAILED on its
# own: WORK/results/stall.job, stall.seconds (from the SIGSTOP to the job's end).
set -euo pipefail
work=$1 esft=$2
repo=$(cd "$(dirname "$0")/.." && pwd)
export ESFT=$esft ESFT_MPI_CHECK_MIB=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mkdir -p "$work"/{in,sbatch,mpirun,results,logs}
cd "$work"
say() { echo "slurm-scenarios: $*" >&2; }

# --- inputs --------------------------------------------------------------------------------------
"$esft" init "$repo/configs/tiny.json" in/model --seed 7 --expert-shards 2 >/dev/null
for i in $(seq 1 60); do
    printf '{"messages": [{"role": "user", "content": "What is %d plus %d?"}, {"role": "assistant", "content": "%d plus %d is %d."}]}\n' \
        "$i" "$((i * 7 % 13))" "$i" "$((i * 7 % 13))" "$((i + i * 7 % 13))"
done >in/chat.jsonl
"$esft" data prepare --tokenizer bytes --input in/chat.jsonl --seq-len 96 --out in/data.h5 >/dev/null
train_opts=(--steps 6 --batch-rows 4 --lr 1e-4 --aux-alpha 0.001)

record() {   # record NAME JOBID STATUS
    echo "$3" >"results/$1.status"
    scontrol show job -o "$2" >"results/$1.job" 2>&1 || true
}
submit_wait() {   # submit_wait NAME sbatch-args...: sbatch --wait, then record the job
    local name=$1 out st=0; shift
    out=$(sbatch --wait --parsable -o "logs/$name-%j.log" "$@") || st=$?
    record "$name" "${out%%;*}" "$st"
    say "$name: job ${out%%;*} exit $st"
}

# --- plain mpirun, the reference ------------------------------------------------------------------
mkdir -p mpirun/score
mpirun -n 2 --oversubscribe "$esft" score --model in/model --data in/data.h5 --tokens all --threads 1 \
    --out mpirun/score/scores.json >logs/mpirun-score.log 2>&1
"$esft" select --scores mpirun/score/scores.json --method token --threshold 0.2 --model in/model \
    --out mpirun/score/experts.json >>logs/mpirun-score.log 2>&1
mpirun -n 2 --oversubscribe "$esft" train --model in/model --data in/data.h5 --experts mpirun/score/experts.json \
    --out mpirun/train --threads 1 "${train_opts[@]}" >logs/mpirun-train.log 2>&1
"$esft" export in/model mpirun/export --trained mpirun/train/trained.safetensors >logs/mpirun-export.log 2>&1

# --- each job script under sbatch --wait -----------------------------------------------------------
submit_wait score -n 2 "$repo/cluster/esft-score.sbatch" in/model in/data.h5 sbatch/score
submit_wait train -n 2 "$repo/cluster/esft-train.sbatch" in/model in/data.h5 mpirun/score/experts.json sbatch/train \
    "${train_opts[@]}"
st=0
ESFT_TRAIN_ARGS="${train_opts[*]}" "$repo/cluster/esft-pipeline.sh" --wait in/model in/data.h5 sbatch/pipeline -n 2 \
    >logs/pipeline.out 2>&1 || st=$?
echo "$st" >results/pipeline.status
for id in $(grep -oE 'job [0-9]+' logs/pipeline.out | cut -d' ' -f2 | sort -u); do scontrol show job -o "$id"; done \
    >results/pipeline.job 2>&1 || true
say "pipeline: exit $st"

# --- a rank fails ----------------------------------------------------------------------------------
submit_wait failure -n 2 --wrap "srun --mpi=pmix $esft mpi-check --size-mib 1 --fail-on-rank 1"

# --- requeue after preemption --------------------------------------------------------------------
if [[ $("$esft" train --help 2>/dev/null) != *--resume* ]]; then
    echo "esft train has no --resume option (checkpoints and resume: issue 10); requeue scenarios not run" \
        >results/requeue.skip
    say "$(cat results/requeue.skip)"
    exit 0
fi
# 300 steps of ~15 ms: the interruption, sent within 0.05 s of the first checkpoint (step 10), lands seconds
# before the end even on a much faster machine (a slower or loaded one only widens the window).
long_opts=(--steps 300 --batch-rows 4 --lr 1e-4 --aux-alpha 0.001)
mpirun -n 2 --oversubscribe "$esft" train --model in/model --data in/data.h5 --experts mpirun/score/experts.json \
    --out mpirun/long --threads 1 "${long_opts[@]}" >logs/mpirun-long.log 2>&1

state_of() { scontrol show job -o "$1" | sed -nE 's/.*JobState=([A-Z_]+).*/\1/p'; }
interrupt() {   # interrupt NAME HOW: submit, wait for a checkpoint, interrupt with HOW, wait for the end
    local name=$1 how=$2 id out=sbatch/$1 i
    id=$(ESFT_CHECKPOINT_EVERY=10 sbatch --parsable -n 2 -o "logs/$name-%j.log" "$repo/cluster/esft-train.sbatch" \
        in/model in/data.h5 mpirun/score/experts.json "$out" "${long_opts[@]}" --keep 2)
    for i in $(seq 1 12000); do   # hang guard only: 10 minutes
        compgen -G "$out/checkpoints/step-*/manifest.json" >/dev/null && break
        sleep 0.05
    done
    local lines; lines=$(wc -l <"$out/metrics.jsonl" 2>/dev/null || echo 0)
    say "$name: job $id has a checkpoint after $lines steps; interrupting with $how"
    echo "$lines" >"results/$name.interrupted-after"
    case $how in
        requeue) scontrol requeue "$id" ;;
        usr1) scancel --signal=USR1 "$id" ;;
    esac
    for i in $(seq 1 1200); do
        case $(state_of "$id") in COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY|BOOT_FAIL|DEADLINE) break ;; esac
        # A requeued job may be held until its begin time; let it start again at once.
        # Only once the first run's processes are gone: a start released while they end can fail at launch.
        if [ "$(state_of "$id")" = PENDING ] && [ -z "$(squeue -h -t completing -o %i)" ] && ! pgrep -x slurmstepd >/dev/null; then
            sleep 1
            scontrol update jobid="$id" StartTime=now 2>/dev/null || true
        fi
        sleep 0.5
    done
    record "$name" "$id" "$(scontrol show job -o "$id" | sed -nE 's/.*ExitCode=([0-9]+):.*/\1/p')"
    say "$name: job $id ended $(state_of "$id")"
}
interrupt requeue-term requeue
interrupt requeue-usr1 usr1

# --- a rank that stops answering (SIGSTOP): the watchdog must fail the job in bounded time ------------
stall() {
    local id out=sbatch/stall p="" i t0
    id=$(sbatch --parsable -n 2 -o "logs/stall-%j.log" "$repo/cluster/esft-train.sbatch" \
        in/model in/data.h5 mpirun/score/experts.json "$out" "${long_opts[@]}" --stall-timeout 4)
    for i in $(seq 1 12000); do   # hang guard only: 10 minutes
        [ "$(wc -l <"$out/metrics.jsonl" 2>/dev/null || echo 0)" -ge 3 ] && break
        sleep 0.05
    done
    for q in $(pgrep -x esft); do   # rank 1 by its SLURM task id
        if tr '\0' '\n' <"/proc/$q/environ" 2>/dev/null | grep -qx 'SLURM_PROCID=1'; then p=$q; break; fi
    done
    [ -n "$p" ] || { say "stall: rank 1 not found"; record stall "$id" 99; return; }
    kill -STOP "$p"; t0=$(date +%s.%N)
    say "stall: job $id rank 1 (pid $p) stopped"
    for i in $(seq 1 1200); do
        case $(state_of "$id") in COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY|BOOT_FAIL|DEADLINE) break ;; esac
        sleep 0.1
    done
    awk -v a="$(date +%s.%N)" -v b="$t0" 'BEGIN { printf "%.2f\n", a - b }' >results/stall.seconds
    kill -CONT "$p" 2>/dev/null || true; kill -KILL "$p" 2>/dev/null || true
    record stall "$id" "$(scontrol show job -o "$id" | sed -nE 's/.*ExitCode=([0-9]+):.*/\1/p')"
    say "stall: job $id ended $(state_of "$id") $(cat results/stall.seconds) s after the SIGSTOP"
}
stall

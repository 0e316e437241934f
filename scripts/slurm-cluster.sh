#!/usr/bin/env bash
# A real one-node SLURM cluster for the length of one command: this host as the only node (its real
# CPU count and memory), munged + slurmctld + slurmd started in the foreground as children of this
# script, every file (config, keys, state, spool, logs, TmpFS) in a fresh directory, stopped by PID
# when COMMAND ends, also on failure or a signal. COMMAND runs with SLURM_CONF pointing at the cluster.
#
#   scripts/slurm-cluster.sh WORKDIR -- COMMAND [ARGS...]
#   scripts/slurm-cluster.sh /tmp/c -- sbatch --wait --wrap hostname
#
# Installs slurm-wlm and munge from Debian when they are missing (apt-get; root or sudo).
# Exit status: COMMAND's; 77 when the daemons cannot start here (the message says exactly why).
# Logs stay in WORKDIR/log/ (munged.log, slurmctld.log, slurmd.log, jobcomp.log).
set -euo pipefail
(($# >= 3)) && [ "$2" = "--" ] || { echo "usage: slurm-cluster.sh WORKDIR -- COMMAND [ARGS...]" >&2; exit 2; }
work=$1; shift 2
mkdir -p "$work"
work=$(cd "$work" && pwd)
skip() { echo "slurm-cluster: SKIP: $*" >&2; exit 77; }

missing=()
for p in slurm-wlm munge; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo -n"
    echo "slurm-cluster: installing ${missing[*]}" >&2
    { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        "${missing[@]}"; } >"$work/apt.log" 2>&1 || skip "could not install ${missing[*]} (see $work/apt.log)"
fi
[ "$(id -u)" -eq 0 ] || skip "slurmd must run as root to start jobs (running as uid $(id -u))"

node=$(hostname -s)
cpus=$(nproc --all)
mem_mib=$(( $(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024 ))
# Ports unlikely to be taken; a busy one makes slurmctld fail and the reason lands in its log.
base=$(( 20000 + ($$ % 2000) * 4 ))
mkdir -p "$work"/{log,state,spool,tmpfs,run}
chmod 700 "$work/run"
rm -rf "$work"/state/* "$work"/spool/* "$work"/tmpfs/*   # job ids restart: never meet an old spmix_appdir

mungekey --create --keyfile="$work/run/munge.key" --force 2>/dev/null \
    || dd if=/dev/urandom of="$work/run/munge.key" bs=1024 count=1 status=none
chmod 400 "$work/run/munge.key"
sock="$work/run/munge.socket"

cat >"$work/slurm.conf" <<EOF
ClusterName=esfttest
SlurmctldHost=$node
SlurmctldPort=$base
SlurmdPort=$((base + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$sock
CredType=cred/munge
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool
TmpFS=$work/tmpfs
SlurmctldPidFile=$work/run/slurmctld.pid
SlurmdPidFile=$work/run/slurmd.pid
SlurmctldLogFile=$work/log/slurmctld.log
SlurmdLogFile=$work/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=pmix
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=1
ReturnToService=2
# Finished jobs stay visible to scontrol for an hour; there is no slurmdbd, so sacct has no data and
# job completion is also written as text.
MinJobAge=3600
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$work/log/jobcomp.log
JobAcctGatherType=jobacct_gather/none
# Requeued jobs may start again at once; preempted steps get KillWait seconds after SIGTERM to checkpoint.
KillWait=30
FirstJobId=$(( 1000 + ($$ % 50000) ))
NodeName=$node CPUs=$cpus RealMemory=$mem_mib State=UNKNOWN
PartitionName=test Nodes=$node Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
cat >"$work/cgroup.conf" <<EOF
# Not used (ProctrackType=proctrack/linuxproc, TaskPlugin=task/none); present so slurmd finds one.
CgroupPlugin=autodetect
IgnoreSystemd=yes
EOF
export SLURM_CONF="$work/slurm.conf"

pids=()
stop() {
    local status=$? p
    trap - EXIT TERM INT
    # Jobs first: slurmstepd processes outlive a killed slurmd.
    scancel --quiet --full -p test 2>/dev/null || true
    for _ in $(seq 1 20); do
        [ -z "$(squeue -h -t running,completing -o %i 2>/dev/null)" ] && break
        sleep 0.5
    done
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for _ in $(seq 1 40); do
        alive=0; for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        ((alive)) || break
        sleep 0.25
    done
    for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    # Step daemons of this cluster (their command line names our spool) that survived.
    for p in $(pgrep -x slurmstepd || true); do
        grep -qa "$work" "/proc/$p/cmdline" "/proc/$p/environ" 2>/dev/null && kill -KILL "$p" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    exit "$status"
}
trap stop EXIT
trap 'exit 143' TERM INT

munged -F --force --socket="$sock" --key-file="$work/run/munge.key" --pid-file="$work/run/munged.pid" \
    --log-file="$work/log/munged.log" --seed-file="$work/run/munged.seed" 2>>"$work/log/munged.log" &
pids+=($!)
for _ in $(seq 1 40); do [ -S "$sock" ] && break; sleep 0.25; done
[ -S "$sock" ] || skip "munged did not start: $(tail -3 "$work/log/munged.log")"

slurmctld -D -f "$SLURM_CONF" >>"$work/log/slurmctld.out" 2>&1 &
pids+=($!)
slurmd -D -f "$SLURM_CONF" >>"$work/log/slurmd.out" 2>&1 &
pids+=($!)
ready=0
for _ in $(seq 1 120); do
    for p in "${pids[@]}"; do
        kill -0 "$p" 2>/dev/null || skip "a daemon exited at start; last lines of its log:
$(tail -5 "$work/log/slurmctld.log" "$work/log/slurmd.log" "$work/log/slurmctld.out" "$work/log/slurmd.out" 2>/dev/null)"
    done
    if sinfo -h -N -o %T 2>/dev/null | grep -qx idle; then ready=1; break; fi
    sleep 0.5
done
((ready)) || skip "the node never became idle; sinfo: $(sinfo -N 2>&1 | tail -2); slurmd log: $(tail -3 "$work/log/slurmd.log")"
echo "slurm-cluster: up: node $node, $cpus CPUs, $mem_mib MiB, SLURM_CONF=$SLURM_CONF" >&2

status=0
"$@" || status=$?
exit "$status"

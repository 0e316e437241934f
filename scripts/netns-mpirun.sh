#!/usr/bin/env bash
# Runs one mpirun job across N separate network "hosts" on this machine: N Linux network namespaces,
# each with its own hostname (a UTS namespace), loopback and one veth on a private subnet, joined by a
# bridge that lives in a further namespace (nothing is added to the host's own network). Ranks on
# different namespaces can only reach each other over TCP, so Open MPI is forced onto the network the
# way it is between real nodes: --mca btl tcp,self, both the BTL and the runtime's out-of-band channel
# pinned to the veth. mpirun starts in node 0; its rsh agent enters the other nodes with `ip netns exec`.
# Everything is torn down on exit, also on failure or a signal.
#
#   scripts/netns-mpirun.sh [--nodes N] [--slots S] [--netem "rate 10gbit delay 50us"] -- MPIRUN_ARGS...
#   scripts/netns-mpirun.sh --nodes 3 -- -n 3 .build/debug/esft mpi-check
#
# --slots S: ranks per node (default 1; mpirun places ranks by slot, so -n 3 with 3 nodes is one per
# node). --netem shapes every node's link with tc netem (both directions pass two shaped links: node →
# bridge is shaped on the node's side, bridge → node on the bridge's side).
# Exit status: mpirun's; 77 when namespaces cannot be created here (the message says why).
set -euo pipefail
nodes=3 slots=1 netem=""
while (($#)); do
    case $1 in
        --nodes) nodes=$2; shift 2 ;;
        --slots) slots=$2; shift 2 ;;
        --netem) netem=$2; shift 2 ;;
        --) shift; break ;;
        *) echo "netns-mpirun: unknown option $1 (options before --; mpirun's after it)" >&2; exit 2 ;;
    esac
done
(($#)) || { echo "netns-mpirun: no mpirun arguments after --" >&2; exit 2; }
command -v mpirun >/dev/null || { echo "netns-mpirun: mpirun is not on PATH (install openmpi-bin)" >&2; exit 77; }

prefix="esft$$"                  # namespace names unique per run, so parallel runs never meet
subnet=10.77.0
work=$(mktemp -d /tmp/esft-netns.XXXXXX)
created=()
teardown() {
    local ns
    for ns in "${created[@]}"; do ip netns del "$ns" 2>/dev/null || true; done   # deletes their veths too
    rm -rf "$work"
}
trap teardown EXIT
trap 'exit 143' TERM INT

skip() { echo "netns-mpirun: SKIP: $*" >&2; exit 77; }
[ "$(id -u)" -eq 0 ] || skip "network namespaces need root (running as uid $(id -u))"
command -v ip >/dev/null || skip "the ip command is missing (install iproute2)"

sw="$prefix-sw"
echo "netns-mpirun: namespaces $prefix-* (nodes $prefix-n0...$prefix-n$((nodes - 1)), bridge $sw), subnet $subnet.0/24" >&2
ip netns add "$sw" 2>"$work/err" || skip "ip netns add failed: $(cat "$work/err")"
created+=("$sw")
ip -n "$sw" link add br0 type bridge || skip "cannot create a bridge in a namespace"
ip -n "$sw" link set br0 up
ip -n "$sw" link set lo up
for ((i = 0; i < nodes; i++)); do
    ns="$prefix-n$i"
    ip netns add "$ns"
    created+=("$ns")
    ip link add "e$$n$i" type veth peer name "p$$n$i" || skip "cannot create veth pairs: $(ip link add x type veth 2>&1)"
    ip link set "e$$n$i" netns "$ns"
    ip link set "p$$n$i" netns "$sw"
    ip -n "$ns" link set "e$$n$i" name eth0
    ip -n "$ns" addr add "$subnet.$((i + 1))/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link set lo up                   # MPI and PMIx also talk to themselves over loopback
    ip -n "$sw" link set "p$$n$i" master br0
    ip -n "$sw" link set "p$$n$i" up
    if [ -n "$netem" ]; then
        # shellcheck disable=SC2086  # netem's parameters are words
        tc -n "$ns" qdisc add dev eth0 root netem $netem || skip "tc netem is not available: $netem"
        # shellcheck disable=SC2086
        tc -n "$sw" qdisc add dev "p$$n$i" root netem $netem
    fi
    echo "$subnet.$((i + 1)) slots=$slots" >>"$work/hostfile"
done

# The rsh agent: `agent HOST COMMAND...` runs COMMAND in the node whose address is HOST, under that
# node's hostname (Open MPI tells nodes apart by hostname).
cat >"$work/agent" <<EOF
#!/bin/bash
host=\$1; shift
i=\$(( \${host##*.} - 1 ))
exec ip netns exec "$prefix-n\$i" unshare --uts /bin/sh -c "hostname node\$i; \$*"
EOF
chmod +x "$work/agent"

status=0
ip netns exec "$prefix-n0" unshare --uts /bin/sh -c 'hostname node0; exec "$@"' sh \
    mpirun --hostfile "$work/hostfile" --mca plm_rsh_agent "$work/agent" \
    --mca btl tcp,self --mca btl_tcp_if_include "$subnet.0/24" --mca oob_tcp_if_include "$subnet.0/24" \
    "$@" || status=$?
exit "$status"

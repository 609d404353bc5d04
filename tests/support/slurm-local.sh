#!/usr/bin/env bash
# A one-node Slurm on localhost for the tests, from Debian's packages, without systemd or munge.
#
#   slurm-local.sh install      apt-get install slurmctld slurmd slurm-client, if missing (root)
#   slurm-local.sh start DIR    write DIR/slurm.conf, start slurmctld and slurmd in the
#                               foreground (-D) as background processes (PIDs in DIR/*.pid),
#                               wait until the node is idle; clients need SLURM_CONF=DIR/slurm.conf
#   slurm-local.sh stop DIR     stop both daemons by their PIDs (and wait for them)
#
# Everything (state, spool, logs, ports) lives in DIR, so several can run side by side.
set -euo pipefail

die() { echo "slurm-local.sh: $*" >&2; exit 1; }

install() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null; then
        return 0
    fi
    [ "$(id -u)" = 0 ] || die "slurmctld/slurmd/sbatch missing and not root: apt-get install slurmctld slurmd slurm-client"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends slurmctld slurmd slurm-client >/dev/null \
        || { apt-get update >/dev/null && apt-get install -y --no-install-recommends slurmctld slurmd slurm-client >/dev/null; }
}

# Starts the daemons on random ports, trying again (up to 3 times) should a port be taken.
start() {
    local dir=$1 try
    mkdir -p "$dir/state" "$dir/spool"
    dir=$(cd "$dir" && pwd)
    for try in 1 2 3; do
        start_once "$dir" && return 0
        [ $try = 3 ] || echo "slurm-local.sh: retrying on other ports" >&2
    done
    die "could not start Slurm in $dir (logs: $dir/*.log, $dir/*.out)"
}

start_once() {
    local dir=$1 host cpus port
    host=$(hostname -s)
    cpus=$(nproc)
    port=$((20000 + (RANDOM % 20000)))
    cat >"$dir/slurm.conf" <<EOF
ClusterName=chatspace-test
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
AuthType=auth/none
CredType=cred/none
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pidfile
SlurmdPidFile=$dir/slurmd.pidfile
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MinJobAge=3600
NodeName=cstest NodeHostname=$host NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN
PartitionName=debug Nodes=cstest Default=YES MaxTime=INFINITE State=UP
EOF
    export SLURM_CONF=$dir/slurm.conf
    slurmctld -D -c -i -f "$SLURM_CONF" >"$dir/slurmctld.out" 2>&1 &
    echo $! >"$dir/slurmctld.pid"
    slurmd -D -c -N cstest -f "$SLURM_CONF" >"$dir/slurmd.out" 2>&1 &
    echo $! >"$dir/slurmd.pid"
    # Poll until the node is idle (or a daemon died), at most 60 s.
    local deadline=$((SECONDS + 60)) state=""
    while [ $SECONDS -lt $deadline ]; do
        for d in slurmctld slurmd; do
            kill -0 "$(cat "$dir/$d.pid")" 2>/dev/null \
                || { tail -n 20 "$dir/$d.out" "$dir/$d.log" >&2 2>/dev/null || true; stop "$dir"; echo "slurm-local.sh: $d exited" >&2; return 1; }
        done
        state=$(sinfo -h -n cstest -o %t 2>/dev/null || true)
        [ "$state" = idle ] && return 0
        sleep 0.2
    done
    tail -n 20 "$dir/slurmctld.log" "$dir/slurmd.log" >&2 2>/dev/null || true
    stop "$dir"
    echo "slurm-local.sh: node not idle after 60 s (state: ${state:-none})" >&2
    return 1
}

stop() {
    local dir=$1 pid
    for d in slurmd slurmctld; do
        [ -f "$dir/$d.pid" ] || continue
        pid=$(cat "$dir/$d.pid")
        kill "$pid" 2>/dev/null || true
        local deadline=$((SECONDS + 15))
        while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
        rm -f "$dir/$d.pid"
    done
}

case "${1:-}" in
    install) install ;;
    start) [ $# = 2 ] || die "usage: $0 start DIR"; start "$2" ;;
    stop) [ $# = 2 ] || die "usage: $0 stop DIR"; stop "$2" ;;
    *) die "usage: $0 install | start DIR | stop DIR" ;;
esac

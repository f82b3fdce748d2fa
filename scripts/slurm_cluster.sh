#!/usr/bin/env bash
# A single-host SLURM cluster for the tests: munge, slurmctld and slurmd on 127.0.0.1, one node with
# N fake GPU devices, one partition, all state under one folder.
#
#   sudo scripts/slurm_cluster.sh start [--gpus N] [--cpus C] [--mem-mb M]   # installs SLURM where missing
#   eval "$(scripts/slurm_cluster.sh env)"                                  # SLURM_CONF for sbatch, squeue, ...
#   scripts/slurm_cluster.sh status
#   sudo scripts/slurm_cluster.sh stop                                      # cancels its jobs, stops the daemons by pid
#
# Accounting: none (no slurmdbd, no database). `sacct` then answers "accounting storage is disabled",
# which is the case that hung Snakemake's SLURM executor for ever; the profile's status check uses
# squeue instead, and MinJobAge here keeps a finished job in squeue for 10 minutes, far longer than
# the executor's poll interval, so every job is seen to end. A cluster with slurmdbd needs nothing of
# this (sacct works there); a database here would cost CI a MariaDB server for no extra proof.
#
# GPUs: slurmd drops a GPU GRES whose File= devices are missing, so the node gets N character
# devices under the state folder (the NVIDIA major number; nothing opens them). A job asking for
# gpu:K gets CUDA_VISIBLE_DEVICES with K of them, as on a real GPU node.
#
# Config: SLURM's default path, /etc/slurm/slurm.conf, links to this cluster's while it runs (and
# only where the machine has none): the SLURM executor's job step calls srun with every SLURM_*
# variable dropped, SLURM_CONF included, so only the default path reaches it. `stop` removes the link.
#
# Needs root (the daemons run as root, munge's key is root's). The folder is $TIER1_SLURM_DIR
# (default /tmp/tier1-slurm); its ports are 16817/16818 on 127.0.0.1 only.
set -euo pipefail

DIR=${TIER1_SLURM_DIR:-/tmp/tier1-slurm}
CONF=$DIR/etc/slurm.conf
PARTITION=${TIER1_SLURM_PARTITION:-tier1}
CTLD_PORT=16817
SLURMD_PORT=16818
NODE=$(hostname -s)
SYSTEM_CONF=/etc/slurm/slurm.conf

say() { echo "slurm_cluster: $*" >&2; }

need_root() {
    if [ "$(id -u)" != 0 ]; then
        say "needs root (it installs and starts munge, slurmctld and slurmd)"
        exit 2
    fi
}

install_if_missing() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null \
        && command -v sbatch >/dev/null; then
        return
    fi
    say "installing slurm-wlm and munge (apt)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q slurm-wlm munge >"$DIR/log/apt.log" 2>&1 \
        || { apt-get update -q >>"$DIR/log/apt.log" 2>&1 && apt-get install -y -q slurm-wlm munge >>"$DIR/log/apt.log" 2>&1; } \
        || { say "apt-get install slurm-wlm munge failed; see $DIR/log/apt.log"; exit 1; }
    # the packages' own services (systemd) are not what this script runs
}

pid_of() { [ -s "$DIR/run/$1.pid" ] && cat "$DIR/run/$1.pid" || true; }
alive() { local pid; pid=$(pid_of "$1"); [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; }

write_config() {
    local gpus=$1 cpus=$2 mem=$3
    mkdir -p "$DIR"/{etc,dev,spool/ctld,spool/d,log,run,munge}
    local devices="" gres=""
    if [ "$gpus" -gt 0 ]; then
        for ((i = 0; i < gpus; i++)); do
            [ -e "$DIR/dev/nvidia$i" ] || mknod "$DIR/dev/nvidia$i" c 195 "$i"
        done
        devices="NodeName=$NODE Name=gpu File=$DIR/dev/nvidia[0-$((gpus - 1))]"
        gres="Gres=gpu:$gpus"
    fi
    cat >"$CONF" <<EOF
# written by scripts/slurm_cluster.sh: a single-host cluster on 127.0.0.1
ClusterName=tier1
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$DIR/munge/munge.socket
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$DIR/spool/ctld
SlurmdSpoolDir=$DIR/spool/d
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
SlurmdParameters=config_overrides
ReturnToService=2
# No accounting (see the script's header): squeue must still see a finished job when asked
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=600
# A cancelled or timed-out job: SIGTERM, then SIGKILL after 5 s (SLURM's default is 30 s)
KillWait=5
OverTimeLimit=0
InactiveLimit=0
# A failed job stays failed (no requeue behind Snakemake's back)
JobRequeue=0
MessageTimeout=10
SchedulerType=sched/backfill
SchedulerParameters=sched_min_interval=0
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem $gres State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
    echo "$devices" >"$DIR/etc/gres.conf"
}

start() {
    local gpus=4 cpus mem
    cpus=$(nproc)
    mem=$(($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 8 / 10))  # 80% of the machine, in MB
    while [ $# -gt 0 ]; do
        case $1 in
            --gpus) gpus=$2; shift 2 ;;
            --cpus) cpus=$2; shift 2 ;;
            --mem-mb) mem=$2; shift 2 ;;
            *) say "unknown option $1"; exit 2 ;;
        esac
    done
    need_root
    if alive slurmctld && alive slurmd; then
        say "already running ($DIR)"
        return
    fi
    mkdir -p "$DIR/log"
    install_if_missing
    if [ -e "$SYSTEM_CONF" ] && [ "$(readlink "$SYSTEM_CONF")" != "$CONF" ]; then
        say "$SYSTEM_CONF exists and is not this cluster's: a SLURM of this machine's own; not touching it"
        exit 1
    fi
    write_config "$gpus" "$cpus" "$mem"
    mkdir -p "$(dirname "$SYSTEM_CONF")"
    ln -sfn "$CONF" "$SYSTEM_CONF"
    export SLURM_CONF=$CONF
    if ! alive munged; then
        # a key of this cluster's own; munged as root needs --force (it would rather run as munge)
        [ -s "$DIR/munge/munge.key" ] || { dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none; }
        chmod 700 "$DIR/munge"
        chmod 400 "$DIR/munge/munge.key"
        munged --force --key-file="$DIR/munge/munge.key" --socket="$DIR/munge/munge.socket" \
            --pid-file="$DIR/run/munged.pid" --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munge.seed"
    fi
    # -c: no state from an earlier start (its jobs are gone)
    alive slurmctld || slurmctld -c -f "$CONF"
    alive slurmd || slurmd -f "$CONF"
    local t0=$SECONDS state=""
    while [ $((SECONDS - t0)) -lt 60 ]; do
        state=$(sinfo -h -N -n "$NODE" -o %t 2>/dev/null | head -1 || true)
        if [ "$state" = idle ]; then
            say "up in $((SECONDS - t0)) s: node $NODE ($cpus CPUs, $mem MB, $gpus GPU devices), partition $PARTITION," \
                "no accounting (status via squeue); SLURM_CONF=$CONF"
            return
        fi
        sleep 0.5
    done
    say "the node did not become idle within 60 s (state: '${state:-none}'); the end of the logs:"
    tail -n 20 "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log" >&2 || true
    stop
    exit 1
}

stop() {
    export SLURM_CONF=$CONF
    if alive slurmctld; then
        # every job of this cluster is the tests' own: cancel them, and wait until none is left running
        scancel --full --partition "$PARTITION" 2>/dev/null || true
        local t0=$SECONDS
        while [ $((SECONDS - t0)) -lt 20 ] && squeue -h -t running,completing,pending -o %i 2>/dev/null | grep -q .; do
            sleep 0.5
        done
    fi
    for daemon in slurmd slurmctld munged; do
        local pid
        pid=$(pid_of "$daemon")
        [ -n "$pid" ] || continue
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid"
            for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -0 "$pid" 2>/dev/null && kill -9 "$pid" || true
        fi
        rm -f "$DIR/run/$daemon.pid"
    done
    if [ "$(readlink "$SYSTEM_CONF" 2>/dev/null)" = "$CONF" ]; then rm -f "$SYSTEM_CONF"; fi
    say "stopped ($DIR)"
}

status() {
    export SLURM_CONF=$CONF
    for daemon in munged slurmctld slurmd; do
        if alive "$daemon"; then echo "$daemon: running (pid $(pid_of "$daemon"))"; else echo "$daemon: not running"; fi
    done
    alive slurmctld && sinfo -N -o "%N %t %c %m %G" || true
    alive slurmctld && alive slurmd
}

case ${1:-} in
    start) shift; start "$@" ;;
    stop) stop ;;
    status) status ;;
    env) echo "export SLURM_CONF=$CONF" ;;
    *) echo "usage: $0 start [--gpus N] [--cpus C] [--mem-mb M] | stop | status | env" >&2; exit 2 ;;
esac

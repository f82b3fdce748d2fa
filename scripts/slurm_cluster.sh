#!/usr/bin/env bash
# A single-host SLURM cluster for the tests: munge, slurmctld and slurmd on 127.0.0.1, one node with
# N fake GPU devices, one partition, all state under one folder.
#
#   sudo scripts/slurm_cluster.sh start [--gpus N] [--cpus C] [--mem-mb M]   # installs SLURM where missing
#   sudo scripts/slurm_cluster.sh start --accounting ...                    # and MariaDB, slurmdbd
#   eval "$(scripts/slurm_cluster.sh env)"                                  # SLURM_CONF for sbatch, squeue, ...
#   scripts/slurm_cluster.sh status
#   sudo scripts/slurm_cluster.sh stop                                      # cancels its jobs, stops the daemons by pid
#
# Accounting, two kinds of cluster:
# - none (the default): no slurmdbd. `sacct` answers "accounting storage is disabled", the case that
#   hung Snakemake's SLURM executor for ever; tier1 switches its status check to squeue, and MinJobAge
#   here keeps a finished job in squeue for 10 minutes, far longer than any wait between checks.
# - --accounting: slurmdbd over a MariaDB server of the cluster's own (apt-installed where missing;
#   its data, socket, pid and log under the folder, TCP on 127.0.0.1 only), as on most real
#   clusters. The executor then asks sacct, whose answers are not squeue's: a cancelled job is
#   "CANCELLED by <uid>" there (tier1.runtime.slurm.plain_job_states).
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
# (default /tmp/tier1-slurm); its ports are 16817/16818 (and 16819 slurmdbd, 16820 MariaDB) on
# 127.0.0.1 only.
set -euo pipefail

DIR=${TIER1_SLURM_DIR:-/tmp/tier1-slurm}
CONF=$DIR/etc/slurm.conf
PARTITION=${TIER1_SLURM_PARTITION:-tier1}
CTLD_PORT=16817
SLURMD_PORT=16818
DBD_PORT=16819
DB_PORT=16820
DB_NAME=tier1_acct_db
NODE=$(hostname -s)
SYSTEM_CONF=/etc/slurm/slurm.conf

say() { echo "slurm_cluster: $*" >&2; }

need_root() {
    if [ "$(id -u)" != 0 ]; then
        say "needs root (it installs and starts munge, slurmctld and slurmd)"
        exit 2
    fi
}

# apt-get install, an update first only where the package lists do not know the packages
apt_install() {
    say "installing $* (apt)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q "$@" >>"$DIR/log/apt.log" 2>&1 \
        || { apt-get update -q >>"$DIR/log/apt.log" 2>&1 && apt-get install -y -q "$@" >>"$DIR/log/apt.log" 2>&1; } \
        || { say "apt-get install $* failed; see $DIR/log/apt.log"; exit 1; }
    # the packages' own services (systemd) are not what this script runs
}

install_if_missing() {
    if ! { command -v slurmctld && command -v slurmd && command -v munged && command -v sbatch; } >/dev/null; then
        apt_install slurm-wlm munge
    fi
    if [ "$1" = yes ] && ! { command -v slurmdbd && command -v mariadbd && command -v mariadb-install-db \
        && command -v mariadb-admin; } >/dev/null; then
        # without recommends: the server, its client and slurmdbd's MySQL plugin are all it needs
        apt_install --no-install-recommends mariadb-server slurmdbd
    fi
}

pid_of() { [ -s "$DIR/run/$1.pid" ] && cat "$DIR/run/$1.pid" || true; }
alive() { local pid; pid=$(pid_of "$1"); [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; }
# a daemon that has exited but is not yet reaped (a zombie, until its parent, init, collects it) has stopped
running() { kill -0 "$1" 2>/dev/null && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }

accounting_config() {
    if [ "$1" = yes ]; then
        echo "# Accounting through slurmdbd (see the script's header); sacct answers from its database"
        echo "AccountingStorageType=accounting_storage/slurmdbd"
        echo "AccountingStorageHost=127.0.0.1"
        echo "AccountingStoragePort=$DBD_PORT"
        echo "# the munge socket for slurmdbd's clients (slurmctld, sacct, sacctmgr): AuthInfo does not reach them"
        echo "AccountingStoragePass=$DIR/munge/munge.socket"
    else
        echo "# No accounting (see the script's header): squeue must still see a finished job when asked"
        echo "AccountingStorageType=accounting_storage/none"
    fi
}

write_config() {
    local gpus=$1 cpus=$2 mem=$3 accounting=$4
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
$(accounting_config "$accounting")
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

# --- accounting: MariaDB and slurmdbd ---------------------------------------------------------------

DB_SOCKET=$DIR/run/mariadb.sock

# MariaDB of the cluster's own: nothing read from /etc/mysql, TCP on 127.0.0.1 only
start_database() {
    if [ ! -d "$DIR/db/mysql" ]; then
        mariadb-install-db --no-defaults --user=root --datadir="$DIR/db" --auth-root-authentication-method=socket \
            --skip-test-db >"$DIR/log/mariadb-install.log" 2>&1 \
            || { say "mariadb-install-db failed; see $DIR/log/mariadb-install.log"; stop; exit 1; }
    fi
    # a test database: no fsync per commit, no native AIO (containers often refuse it), the lock wait
    # slurmdbd asks for; its log still warns of a buffer pool under 512 MB (one of a few jobs' records)
    setsid mariadbd --no-defaults --user=root --datadir="$DIR/db" --socket="$DB_SOCKET" --bind-address=127.0.0.1 \
        --port="$DB_PORT" --pid-file="$DIR/run/mariadbd.pid" --log-error="$DIR/log/mariadb.log" --skip-name-resolve \
        --innodb-buffer-pool-size=128M --innodb-lock-wait-timeout=900 \
        --innodb-flush-log-at-trx-commit=2 --innodb-use-native-aio=0 \
        </dev/null >/dev/null 2>&1 &
    local t0=$SECONDS
    until mariadb-admin --no-defaults --socket="$DB_SOCKET" -u root ping >/dev/null 2>&1; do
        if [ $((SECONDS - t0)) -ge 60 ]; then
            say "MariaDB did not answer within 60 s; the end of its log:"
            tail -n 20 "$DIR/log/mariadb.log" >&2 || true
            stop
            exit 1
        fi
        sleep 0.2
    done
}

# slurmdbd's database (kept from start to start, like slurmctld's job ids) and its user, with a new
# password each start
accounting_db() {
    local password
    password=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
    mariadb --no-defaults --socket="$DB_SOCKET" -u root <<EOF
CREATE OR REPLACE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$password';
CREATE DATABASE IF NOT EXISTS $DB_NAME;
GRANT ALL ON $DB_NAME.* TO 'slurm'@'127.0.0.1';
EOF
    # slurmdbd refuses a config others can read (it holds the password); it is found beside slurm.conf
    (umask 077 && cat >"$DIR/etc/slurmdbd.conf" <<EOF
# written by scripts/slurm_cluster.sh: the cluster's accounting on 127.0.0.1
AuthType=auth/munge
AuthInfo=socket=$DIR/munge/munge.socket
DbdHost=$NODE
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
PidFile=$DIR/run/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$password
StorageLoc=$DB_NAME
EOF
    )
}

start_slurmdbd() {
    slurmdbd
    # the cluster registered before slurmctld starts, so that its first jobs are recorded
    local t0=$SECONDS
    until sacctmgr -n list cluster format=cluster 2>/dev/null | grep -qw tier1 \
        || sacctmgr -i add cluster tier1 >>"$DIR/log/sacctmgr.log" 2>&1; do
        if [ $((SECONDS - t0)) -ge 60 ]; then
            say "slurmdbd did not answer within 60 s; the end of its log:"
            tail -n 20 "$DIR/log/slurmdbd.log" "$DIR/log/sacctmgr.log" >&2 || true
            stop
            exit 1
        fi
        sleep 0.5
    done
}

start() {
    local gpus=4 cpus mem accounting=no
    cpus=$(nproc)
    mem=$(($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 8 / 10))  # 80% of the machine, in MB
    while [ $# -gt 0 ]; do
        case $1 in
            --gpus) gpus=$2; shift 2 ;;
            --cpus) cpus=$2; shift 2 ;;
            --mem-mb) mem=$2; shift 2 ;;
            --accounting) accounting=yes; shift ;;
            *) say "unknown option $1"; exit 2 ;;
        esac
    done
    need_root
    if alive slurmctld && alive slurmd; then
        local has=no
        if alive slurmdbd; then has=yes; fi
        if [ "$has" != "$accounting" ]; then
            say "already running ($DIR), $([ "$has" = yes ] && echo with || echo without) accounting: stop it first"
            exit 1
        fi
        say "already running ($DIR)"
        return
    fi
    mkdir -p "$DIR/log"
    install_if_missing "$accounting"
    if [ -e "$SYSTEM_CONF" ] && [ "$(readlink "$SYSTEM_CONF")" != "$CONF" ]; then
        say "$SYSTEM_CONF exists and is not this cluster's: a SLURM of this machine's own; not touching it"
        exit 1
    fi
    write_config "$gpus" "$cpus" "$mem" "$accounting"
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
    local t0=$SECONDS kind="no accounting (status via squeue)"
    if [ "$accounting" = yes ]; then
        alive mariadbd || { start_database && accounting_db; }
        alive slurmdbd || start_slurmdbd
        kind="accounting: slurmdbd and MariaDB up in $((SECONDS - t0)) s (status via sacct)"
    fi
    # -c: no state from an earlier start (its jobs are gone)
    alive slurmctld || slurmctld -c -f "$CONF"
    alive slurmd || slurmd -f "$CONF"
    local state="" t1=$SECONDS
    while [ $((SECONDS - t1)) -lt 60 ]; do
        state=$(sinfo -h -N -n "$NODE" -o %t 2>/dev/null | head -1 || true)
        # with accounting, up once sacct answers too (slurmctld has registered with slurmdbd)
        if [ "$state" = idle ] && { [ "$accounting" = no ] || sacct -X -n -S now -o JobIDRaw >/dev/null 2>&1; }; then
            say "up in $((SECONDS - t0)) s: node $NODE ($cpus CPUs, $mem MB, $gpus GPU devices), partition $PARTITION," \
                "$kind; SLURM_CONF=$CONF"
            return
        fi
        sleep 0.5
    done
    say "not up within 60 s (node state: '${state:-none}'$([ "$accounting" = no ] || echo ", or sacct not answering")); the end of the logs:"
    tail -n 20 "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log" >&2 || true
    [ "$accounting" = no ] || tail -n 20 "$DIR/log/slurmdbd.log" >&2 || true
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
    # slurmctld before slurmdbd (it sends its last records), slurmdbd before its database, munge last
    for daemon in slurmd slurmctld slurmdbd mariadbd munged; do
        local pid
        pid=$(pid_of "$daemon")
        [ -n "$pid" ] || continue
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid"
            for _ in $(seq 100); do running "$pid" || break; sleep 0.1; done
            running "$pid" && kill -9 "$pid" || true
        fi
        rm -f "$DIR/run/$daemon.pid"
    done
    if [ "$(readlink "$SYSTEM_CONF" 2>/dev/null)" = "$CONF" ]; then rm -f "$SYSTEM_CONF"; fi
    say "stopped ($DIR)"
}

status() {
    export SLURM_CONF=$CONF
    for daemon in munged slurmctld slurmd slurmdbd mariadbd; do
        if [ "$daemon" = slurmdbd ] || [ "$daemon" = mariadbd ]; then [ -s "$DIR/run/$daemon.pid" ] || continue; fi
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
    *) echo "usage: $0 start [--accounting] [--gpus N] [--cpus C] [--mem-mb M] | stop | status | env" >&2; exit 2 ;;
esac

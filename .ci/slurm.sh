#!/usr/bin/env bash
# A single-node SLURM on this machine, for the tests of `--executor slurm` against a real scheduler
# (tests/test_slurm_real.py) and for trying the cluster path by hand (docs/slurm_workstation.md).
#
#   bash .ci/slurm.sh install   Debian's slurm-wlm and munge, if missing (apt-get; root)
#   bash .ci/slurm.sh start     munged, slurmctld and slurmd as root, everything they write in $NNUNET_EXT_SLURM_DIR
#                               (default /tmp/nnunet_ext_slurm); waits until the node is idle and prints the
#                               environment to use (`eval "$(bash .ci/slurm.sh start)"` sets it)
#   bash .ci/slurm.sh stop      cancels the jobs left, stops the three daemons started by `start` (by their pid files)
#                               and removes the folder
#   bash .ci/slurm.sh status    sinfo and squeue of that cluster
#
# The node is this machine (`hostname -s`) with all its CPUs and its memory less a margin, in one partition `debug`
# (default, no time limit). No accounting (sacct does not work: use squeue / scontrol show job; finished jobs stay
# visible to scontrol for an hour, MinJobAge). Jobs may be requeued (scontrol requeue, submitit on a time limit).
set -euo pipefail

DIR="${NNUNET_EXT_SLURM_DIR:-${TMPDIR:-/tmp}/nnunet_ext_slurm}"
CONF="$DIR/slurm.conf"
START_TIMEOUT_S="${NNUNET_EXT_SLURM_START_TIMEOUT_S:-60}"

die() { echo "slurm.sh: $*" >&2; exit 1; }
need_root() { [ "$(id -u)" = 0 ] || die "$1 needs root (the daemons run as root, SlurmUser=root)"; }
have_packages() { command -v munged >/dev/null && command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
                  && command -v sbatch >/dev/null; }

install() {
    if have_packages; then
        echo "slurm.sh: munged, slurmctld, slurmd and sbatch are installed"
        return
    fi
    need_root install
    command -v apt-get >/dev/null || die "no apt-get: install SLURM (slurmctld, slurmd, client) and munge by hand"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends slurm-wlm munge
}

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

write_config() {
    local host cpus memory
    host="$(hostname -s)"
    cpus="$(nproc)"
    # MB slurmd may hand out: the machine's memory less 1 GB (at least half of it) for the system and the daemons
    memory="$(awk '/^MemTotal:/ {t = int($2 / 1024); m = t - 1024; if (m < t / 2) m = int(t / 2); print m}' \
        /proc/meminfo)"
    mkdir -p "$DIR/state" "$DIR/spool" "$DIR/munge"
    chmod 700 "$DIR/munge"
    if [ ! -f "$DIR/munge/munge.key" ]; then
        # munged wants a key of at least 32 bytes, readable by its user only
        dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
        chmod 400 "$DIR/munge/munge.key"
    fi
    cat > "$CONF" <<EOF
# single-node SLURM written by .ci/slurm.sh
ClusterName=nnunetext
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire: a requeued job waits this long before it may start again (default 120 s)
AuthInfo=socket=$DIR/munge/munge.socket,cred_expire=10
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
# no cgroups: a job's processes are found through their parents
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
# a prompt scheduler for a one-node toy (defaults: every 60 s, backfill every 30 s)
SchedulerParameters=sched_interval=2,bf_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
# finished jobs stay visible to scontrol for an hour (no accounting, no sacct)
MinJobAge=3600
JobRequeue=1
KillWait=5
MpiDefault=none
MailProg=/bin/true
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
}

start() {
    need_root start
    have_packages || die "SLURM or munge is not installed: run 'bash .ci/slurm.sh install' first"
    if pid_alive "$DIR/slurmctld.pid" || pid_alive "$DIR/slurmd.pid" || pid_alive "$DIR/munge/munged.pid"; then
        die "a cluster of $DIR is running already: 'bash .ci/slurm.sh stop' first"
    fi
    write_config
    munged --force --key-file="$DIR/munge/munge.key" --socket="$DIR/munge/munge.socket" \
        --pid-file="$DIR/munge/munged.pid" --seed-file="$DIR/munge/munged.seed" --log-file="$DIR/munge/munged.log"
    # -i: forget the jobs of an earlier start (a fresh cluster every time)
    SLURM_CONF="$CONF" slurmctld -i -f "$CONF"
    SLURM_CONF="$CONF" slurmd -f "$CONF"
    local deadline=$((SECONDS + START_TIMEOUT_S)) state=""
    while [ $SECONDS -lt $deadline ]; do
        state="$(SLURM_CONF="$CONF" sinfo -h -N -o '%T' 2>/dev/null | head -n 1 || true)"
        [ "$state" = idle ] && break
        sleep 1
    done
    if [ "$state" != idle ]; then
        echo "slurm.sh: the node is not idle after ${START_TIMEOUT_S} s (state '${state}'); the daemons' logs:" >&2
        tail -n 20 "$DIR/munge/munged.log" "$DIR/slurmctld.log" "$DIR/slurmd.log" >&2 || true
        stop >&2
        exit 1
    fi
    echo "export SLURM_CONF=$CONF"
    echo "# partition: debug; node: $(hostname -s) idle; logs in $DIR; stop with: bash .ci/slurm.sh stop"
}

stop_daemon() {  # name, pid file: SIGTERM, then SIGKILL if it is still there after 10 s
    local pid
    [ -f "$2" ] || return 0
    pid="$(cat "$2")"
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid"
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        if kill -0 "$pid" 2>/dev/null; then
            echo "slurm.sh: $1 (pid $pid) did not stop, killed" >&2
            kill -9 "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$2"
}

stop() {
    if [ -f "$CONF" ] && pid_alive "$DIR/slurmctld.pid"; then
        # jobs still running are cancelled, so that none is left training after its cluster is gone
        SLURM_CONF="$CONF" scancel --quiet --user="$(id -un)" 2>/dev/null || true
    fi
    stop_daemon slurmd "$DIR/slurmd.pid"
    stop_daemon slurmctld "$DIR/slurmctld.pid"
    stop_daemon munged "$DIR/munge/munged.pid"
    case "$DIR" in
        /tmp/*|"${TMPDIR:-/tmp}"/*) rm -rf "$DIR" ;;
        *) echo "slurm.sh: $DIR kept (not under a temporary folder)" ;;
    esac
    echo "slurm.sh: stopped"
}

status() {
    [ -f "$CONF" ] || die "no cluster in $DIR"
    SLURM_CONF="$CONF" sinfo
    SLURM_CONF="$CONF" squeue
}

case "${1:-}" in
    install) install ;;
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: bash .ci/slurm.sh install|start|stop|status" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# Start a one-node SLURM cluster on localhost, for tests/test_slurm.py and for trying
# `snakemake --profile profiles/slurm` on a workstation. Debian/Ubuntu, run as root, no systemd.
#
# Idempotent: installs slurmctld/slurmd/slurm-client/munge only when missing, rewrites
# slurm.conf only when it changed (and then restarts the daemons), starts only what is not
# running, and returns once `sinfo` shows the node idle. Exit codes: 0 up, 2 cannot run here
# (not root, no apt-get, install failed: the test suite skips), 1 the daemons did not come up.
#
# The config is cgroup-free and has no accounting database (containers have neither), so
# `sacct` does not work: the slurm profile queries job status with squeue, which remembers
# finished jobs for MinJobAge seconds.
set -euo pipefail

CONF_DIR=/etc/slurm
LOG_DIR=/var/log/slurm
MIN_JOB_AGE=600   # squeue forgets a finished job after this; the profile's status checks need >= 300
WAIT_S=60

say() { echo "slurm-start: $*" >&2; }
cannot() { say "cannot run here: $*"; exit 2; }
die() { say "$*"; for f in "$LOG_DIR"/slurmctld.log "$LOG_DIR"/slurmd.log; do [ -f "$f" ] && tail -n 5 "$f" >&2; done; exit 1; }

install_packages() {
    local missing=0 cmd
    for cmd in slurmctld slurmd sbatch squeue sinfo munged; do
        command -v "$cmd" >/dev/null 2>&1 || missing=1
    done
    [ "$missing" = 0 ] && return 0
    command -v apt-get >/dev/null 2>&1 || cannot "SLURM is not installed and apt-get is missing"
    say "installing slurmctld slurmd slurm-client munge (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    # policy-rc.d 101 keeps the package scripts from starting daemons themselves (no systemd here).
    local policy=/usr/sbin/policy-rc.d created_policy=0
    if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; created_policy=1; fi
    local ok=1
    apt-get update -qq >/dev/null 2>&1 || ok=0
    [ "$ok" = 1 ] && { apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge \
        >/dev/null 2>&1 || ok=0; }
    [ "$created_policy" = 1 ] && rm -f "$policy"
    [ "$ok" = 1 ] || cannot "apt-get could not install slurmctld slurmd slurm-client munge"
}

write_conf() {
    local host cpus mem conf
    host=$(hostname -s)
    cpus=$(nproc)
    # Leave ~10% of RAM to the OS: slurmd drains a node whose RealMemory exceeds what it finds.
    mem=$(free -m | awk '/^Mem:/ {print int($2 * 0.9)}')
    conf=$(cat <<EOF
# Written by tests/slurm/start.sh: one node on localhost, no cgroups, no accounting.
ClusterName=distillc
SlurmctldHost=${host}
SlurmUser=slurm
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=${LOG_DIR}/slurmctld.log
SlurmdLogFile=${LOG_DIR}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
MinJobAge=${MIN_JOB_AGE}
KillWait=5
InactiveLimit=0
DefMemPerCPU=1000
NodeName=localhost NodeHostname=${host} CPUs=${cpus} RealMemory=${mem} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
)
    mkdir -p "$CONF_DIR"
    if [ "$(cat "$CONF_DIR/slurm.conf" 2>/dev/null)" != "$conf" ]; then
        printf '%s\n' "$conf" >"$CONF_DIR/slurm.conf"
        return 1   # changed: running daemons must restart
    fi
}

make_dirs() {
    install -d -o slurm -g slurm /var/spool/slurmctld /var/spool/slurmd "$LOG_DIR" /run/slurm
    install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
    install -d -o munge -g munge -m 0755 /run/munge
    if [ ! -s /etc/munge/munge.key ]; then
        if command -v mungekey >/dev/null 2>&1; then mungekey --create --keyfile=/etc/munge/munge.key >/dev/null
        else dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none; fi
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
}

running() { pgrep -x "$1" >/dev/null 2>&1; }

start_daemons() {
    running munged || runuser -u munge -- munged || die "munged did not start"
    munge -n </dev/null | unmunge >/dev/null 2>&1 || die "munge cannot encode/decode a credential"
    # -i: ignore saved state of a previous cluster (a test cluster starts clean).
    running slurmctld || slurmctld -i || die "slurmctld did not start"
    running slurmd || slurmd -N localhost || die "slurmd did not start"
}

wait_idle() {
    local i state
    for ((i = 0; i < WAIT_S * 2; i++)); do
        state=$(sinfo -h -n localhost -o '%T' 2>/dev/null || true)
        case "$state" in
            idle|mixed|allocated) return 0 ;;
            drained*|down*|fail*) scontrol update NodeName=localhost State=RESUME >/dev/null 2>&1 || true ;;
        esac
        sleep 0.5
    done
    die "node not idle after ${WAIT_S}s (sinfo: '${state:-no answer}')"
}

[ "$(id -u)" = 0 ] || cannot "must run as root (installs packages, starts daemons)"
install_packages
make_dirs
if ! write_conf; then
    # A new config: restart whatever runs with the old one.
    "$(dirname "$0")/stop.sh" --keep-munge
fi
start_daemons
wait_idle
sinfo -h -o '%P %D %c %m %T' >&2

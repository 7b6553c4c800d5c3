#!/usr/bin/env bash
# Stop the test cluster started by tests/slurm/start.sh: cancel its jobs, then stop slurmd,
# slurmctld and (unless --keep-munge) munged. Idempotent: stopping a stopped cluster is fine.
# Each daemon is found by its pid file, then by exact process name, and gets SIGKILL after 10 s.
set -uo pipefail

say() { echo "slurm-stop: $*" >&2; }

stop_daemon() {  # name pidfile
    local name=$1 pidfile=$2 pids i
    pids=$(cat "$pidfile" 2>/dev/null || true)
    [ -n "$pids" ] && kill -0 $pids 2>/dev/null || pids=$(pgrep -x "$name" || true)
    [ -z "$pids" ] && return 0
    kill -TERM $pids 2>/dev/null
    for ((i = 0; i < 20; i++)); do kill -0 $pids 2>/dev/null || return 0; sleep 0.5; done
    say "$name ignored SIGTERM; sending SIGKILL"
    kill -KILL $pids 2>/dev/null
    return 0
}

[ "$(id -u)" = 0 ] || { say "must run as root"; exit 2; }
if command -v scancel >/dev/null 2>&1 && pgrep -x slurmctld >/dev/null; then
    timeout 10 scancel --full --quiet --state=PENDING,RUNNING --partition=debug 2>/dev/null || true
fi
stop_daemon slurmd /run/slurm/slurmd.pid
stop_daemon slurmctld /run/slurm/slurmctld.pid
[ "${1:-}" = "--keep-munge" ] || stop_daemon munged /run/munge/munged.pid
exit 0

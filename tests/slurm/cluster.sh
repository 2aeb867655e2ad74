#!/usr/bin/env bash
# Start or stop a one-node SLURM cluster on localhost for tests (needs root, Debian's
# slurm-wlm and munge packages: `apt-get install -y slurm-wlm munge`).
#   bash tests/slurm/cluster.sh start DIR   # writes DIR/slurm.conf, starts munged, slurmctld, slurmd
#   bash tests/slurm/cluster.sh stop DIR    # stops the daemons it started
#   bash tests/slurm/cluster.sh logs DIR    # prints the daemons' logs
# Prints `export SLURM_CONF=DIR/slurm.conf` on start; every SLURM client needs that variable.
set -euo pipefail
cmd=${1:?usage: cluster.sh start|stop|logs DIR}
dir=$(mkdir -p "${2:?usage: cluster.sh start|stop|logs DIR}" && cd "$2" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
export SLURM_CONF=$dir/slurm.conf

wait_for() {  # wait_for SECONDS COMMAND...: bounded wait for a command to succeed
    local limit=$1; shift
    for _ in $(seq "$limit"); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
    return 1
}

case $cmd in
start)
    mkdir -p "$dir/state" "$dir/spool" "$dir/munge"
    host=$(hostname -s)
    cpus=$(nproc)
    mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
    sed -e "s|@HOST@|$host|g" -e "s|@DIR@|$dir|g" -e "s|@CPUS@|$cpus|g" -e "s|@MEM_MB@|$mem|g" \
        -e "s|@CTLD_PORT@|${SLURMCTLD_PORT:-16817}|g" -e "s|@SLURMD_PORT@|${SLURMD_PORT:-16818}|g" \
        "$here/slurm.conf.in" > "$dir/slurm.conf"
    : > "$dir/gres.conf"
    # munge: a key of our own, a socket of our own, so that a system munged is left alone
    if [ ! -f "$dir/munge/munge.key" ]; then
        dd if=/dev/urandom bs=1 count=1024 of="$dir/munge/munge.key" 2>/dev/null
        chmod 400 "$dir/munge/munge.key"
    fi
    munged --force --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.socket" \
        --pid-file="$dir/munge/munged.pid" --log-file="$dir/munge/munged.log" --seed-file="$dir/munge/munge.seed"
    # SLURM finds munge's socket through its AuthInfo setting
    printf 'AuthInfo=socket=%s\n' "$dir/munge/munge.socket" >> "$dir/slurm.conf"
    slurmctld -f "$dir/slurm.conf"
    wait_for 30 scontrol ping || { echo "slurmctld did not come up" >&2; exit 1; }
    slurmd -f "$dir/slurm.conf"
    wait_for 60 bash -c "sinfo -h -o %T | grep -qE '^(idle|mixed|allocated)'" \
        || { echo "slurmd did not register" >&2; sinfo >&2 || true; exit 1; }
    echo "export SLURM_CONF=$dir/slurm.conf"
    ;;
stop)
    for pidfile in "$dir/slurmd.pid" "$dir/slurmctld.pid" "$dir/munge/munged.pid"; do
        if [ -f "$pidfile" ]; then kill "$(cat "$pidfile")" 2>/dev/null || true; fi
    done
    sleep 1
    ;;
logs)
    for f in "$dir/slurmctld.log" "$dir/slurmd.log" "$dir/munge/munged.log"; do
        [ -f "$f" ] && { echo "==== $f"; tail -n 60 "$f"; }
    done
    ;;
*) echo "usage: cluster.sh start|stop|logs DIR" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# A real one-node SLURM cluster on this machine, for the tests marked `slurm` (tests/slurm/).
#
#   scripts/slurm_test_cluster.sh start    install (Debian's slurm-wlm and munge), configure, start;
#                                          does nothing but wait for the node when it already runs
#   scripts/slurm_test_cluster.sh stop     cancel every job, stop the daemons, forget the jobs
#   scripts/slurm_test_cluster.sh status   exit 0 when the node answers and is usable
#
# Run as root, without systemd. The configuration and every obstacle it works around are described
# in CLUSTER.md (shared notes): linuxproc process tracking (no cgroup freezer here), CPUs as the
# consumable (several test jobs at once), a 5 s credential expiry (2 is refused) and a 1 s scheduler
# tick (a requeue cycle of about 6 s instead of about 3 min), two partitions for preemption.
set -euo pipefail

state_dir="${SLURM_TEST_STATE:-/var/lib/slurm-test}"
conf_dir=/etc/slurm
host="$(hostname -s)"

log() { echo "slurm_test_cluster: $*" >&2; }

install_packages() {
    if command -v slurmctld >/dev/null && command -v munged >/dev/null; then
        return
    fi
    log "installing slurm-wlm and munge (apt-get)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
}

write_config() {
    local cpus memory
    cpus=16  # advertised (config_overrides): several small test jobs run at once on a 2-core machine
    memory="$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')"
    mkdir -p "$conf_dir" "$state_dir/ctld" "$state_dir/d" "$state_dir/log"
    cat >"$conf_dir/slurm.conf" <<EOF
# Written by scripts/slurm_test_cluster.sh: a one-node test cluster (see CLUSTER.md).
ClusterName=experiment-test
SlurmctldHost=${host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=cred_expire=5
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,bf_interval=1
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
KillWait=10
MinJobAge=600
JobRequeue=1
SlurmdParameters=config_overrides
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
SlurmctldParameters=preempt_send_user_signal
StateSaveLocation=${state_dir}/ctld
SlurmdSpoolDir=${state_dir}/d
SlurmctldPidFile=${state_dir}/slurmctld.pid
SlurmdPidFile=${state_dir}/slurmd.pid
SlurmctldLogFile=${state_dir}/log/slurmctld.log
SlurmdLogFile=${state_dir}/log/slurmd.log
NodeName=${host} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=${memory} State=UNKNOWN
PartitionName=debug Nodes=${host} Default=YES MaxTime=INFINITE State=UP PriorityTier=1 GraceTime=10
PartitionName=high Nodes=${host} MaxTime=INFINITE State=UP PriorityTier=10
EOF
}

start_munge() {
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        return
    fi
    if [[ ! -s /etc/munge/munge.key ]]; then
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
        chown munge:munge /etc/munge/munge.key
        chmod 400 /etc/munge/munge.key
    fi
    mkdir -p /run/munge
    chown munge:munge /run/munge
    su -s /bin/sh munge -c /usr/sbin/munged  # forks into the background
    for _ in $(seq 50); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return
        sleep 0.1
    done
    log "munged did not start"
    exit 1
}

running() {  # $1: daemon name; true when its pid file names a live process of that name
    local pid_file="$state_dir/$1.pid" pid
    [[ -s "$pid_file" ]] || return 1
    pid="$(cat "$pid_file")"
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$1" ]]
}

node_ready() {
    local state
    state="$(sinfo -h -N -n "$host" -o %T 2>/dev/null | head -1)"
    # Any state in which the node runs jobs (a job ending leaves it "completing" for a moment).
    [[ "$state" =~ ^(idle|mixed|allocated|completing)$ ]]
}

start() {
    install_packages
    if running slurmctld && running slurmd && node_ready; then
        log "already running"
        return
    fi
    write_config
    start_munge
    if ! running slurmctld; then
        setsid slurmctld -D -i >>"$state_dir/log/slurmctld.out" 2>&1 </dev/null &
    fi
    if ! running slurmd; then
        setsid slurmd -D >>"$state_dir/log/slurmd.out" 2>&1 </dev/null &
    fi
    for _ in $(seq 300); do
        if node_ready; then
            log "node $host ready: $(sinfo -h -o '%P %a %T' | tr '\n' ' ')"
            return
        fi
        sleep 0.1
    done
    log "the node did not become idle in 30 s; see $state_dir/log/"
    sinfo >&2 || true
    exit 1
}

stop() {
    if running slurmctld; then
        scancel --full --user=root 2>/dev/null || true
    fi
    local daemon pid
    for daemon in slurmd slurmctld; do
        if running "$daemon"; then
            pid="$(cat "$state_dir/$daemon.pid")"
            kill "$pid"
            for _ in $(seq 100); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
        fi
    done
    rm -rf "$state_dir/ctld" "$state_dir/d"  # job ids and queue start afresh next time
    log "stopped"
}

status() {
    if running slurmctld && running slurmd && node_ready; then
        sinfo
        return 0
    fi
    log "not running"
    return 1
}

case "${1:-}" in
start) start ;;
stop) stop ;;
status) status ;;
*)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac

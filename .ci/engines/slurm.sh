#!/usr/bin/env bash
# A one-node Slurm cluster on this machine for the tests in tests/slurm/: installs Debian's slurm-wlm and
# munge when missing, writes /etc/slurm/slurm.conf (+ gres.conf) for this node, starts munged, slurmctld and
# slurmd as root in the background, and waits until `sinfo` shows the node idle. Idempotent: a no-op when
# the node already answers idle (or busy) with this script's configuration.
#
# The node line comes from `slurmd -C`, with two changes for tests on a small box:
# - CPUs: LABRUN_SLURM_NODE_CPUS (default: at least 8) so that several one-CPU test jobs run at once
#   (SlurmdParameters=config_overrides lets the configuration claim more than the hardware);
# - Gres=gpu:2 with stand-in device files (gres.conf): a GPU-less node that still takes GPU requests, so a
#   2-GPU run's request can be checked as Slurm records it.
# Without cgroups in a container: ProctrackType=proctrack/linuxproc, TaskPlugin=task/none. No slurmdbd:
# sacct knows nothing here; MinJobAge keeps ended jobs visible to squeue/scontrol for 10 minutes.
set -euo pipefail

conf_dir=/etc/slurm
log_dir=/var/log/slurm
cpus="${LABRUN_SLURM_NODE_CPUS:-}"
# The marker names the configuration's version: a node running an older one is configured again.
marker="# written by labrun .ci/engines/slurm.sh (v2: partitions debug and urgent, partition-priority preemption)"

# shellcheck source=../lib/install-missing.sh
source "$(dirname "$0")/../lib/install-missing.sh"
install_missing slurmctld=slurm-wlm munged=munge

node_state() { sinfo -h -N -o '%T' 2>/dev/null | head -n1 | tr -d '*~#' || true; }

if [ -f "$conf_dir/slurm.conf" ] && grep -qF "$marker" "$conf_dir/slurm.conf"; then
  case "$(node_state)" in
    idle | mixed | allocated | completing)
      echo "slurm already running: $(sinfo -h -N -o '%N %T %c CPUs %G')"
      exit 0
      ;;
  esac
fi

if [ "$(id -u)" != 0 ]; then
  echo "no Slurm node answers and this is not root: cannot start munged, slurmctld and slurmd" >&2
  exit 1
fi

mkdir -p "$conf_dir" "$log_dir" /var/spool/slurmctld /var/spool/slurmd /run/munge /var/log/munge
host="$(hostname -s)"
node_line="$(slurmd -C | head -n1)"
hw_cpus="$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$node_line")"
if [ -z "$cpus" ]; then cpus=$((hw_cpus > 8 ? hw_cpus : 8)); fi
memory="$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$node_line")"

cat >"$conf_dir/slurm.conf" <<EOF
$marker (from: $node_line)
ClusterName=labrun
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$log_dir/slurmctld.log
SlurmdLogFile=$log_dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
GresTypes=gpu
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
# Ended jobs stay in squeue/scontrol for 10 minutes (there is no accounting database to ask later).
MinJobAge=600
# The node comes back idle by itself after a restart of slurmd; nothing waits on an admin's resume.
ReturnToService=2
SlurmctldParameters=enable_configless
SlurmdParameters=config_overrides
SchedulerParameters=defer_batch=0
# Between the SIGTERM of a cancel, preemption or requeue and the SIGKILL: time to write a checkpoint.
KillWait=15
JobRequeue=1
SlurmctldTimeout=30
SlurmdTimeout=60
# Preemption by partition priority (no accounting daemon, so no QOS preemption): a job of "urgent" may
# requeue jobs of "debug" when it needs their CPUs (tests/slurm/test_slurm_preemption.py, docs/priorities.md).
# Nothing else submits to "urgent", so no other test sees a preemption.
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
NodeName=$host CPUs=$cpus RealMemory=$memory Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP PriorityTier=1
PartitionName=urgent Nodes=$host MaxTime=INFINITE State=UP PriorityTier=2
EOF
# Stand-ins for two GPU device files: slurmd counts a gres by its files (and a node whose gres count is
# lower than configured is refused); nothing opens them, as no cgroup device constraint is configured.
mkdir -p /var/lib/labrun-slurm
touch /var/lib/labrun-slurm/gpu0 /var/lib/labrun-slurm/gpu1
cat >"$conf_dir/gres.conf" <<EOF
$marker
AutoDetect=off
NodeName=$host Name=gpu File=/var/lib/labrun-slurm/gpu[0-1]
EOF

# munged: a key (the package makes one; make one if it did not), then the daemon.
if [ ! -s /etc/munge/munge.key ]; then
  dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
fi
chown -R munge:munge /etc/munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
chmod 0400 /etc/munge/munge.key
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  echo "starting munged"
  rm -f /run/munge/munged.pid
  runuser -u munge -- /usr/sbin/munged
  for _ in $(seq 1 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
fi

# slurmctld and slurmd: restarted so that they read the configuration written above.
stop() {  # stop PIDFILE NAME
  local pid
  pid="$(cat "$1" 2>/dev/null || true)"
  if [ -n "$pid" ] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "$2"; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$1"
}
stop /run/slurmd.pid slurmd
stop /run/slurmctld.pid slurmctld
echo "starting slurmctld and slurmd (logs: $log_dir)"
setsid slurmctld </dev/null >>"$log_dir/slurmctld.out" 2>&1
setsid slurmd </dev/null >>"$log_dir/slurmd.out" 2>&1

for _ in $(seq 1 120); do
  state="$(node_state)"
  case "$state" in
    idle | mixed | allocated)
      echo "slurm up: $(sinfo -h -N -o '%N %T %c CPUs %G')"
      exit 0
      ;;
    down | drained | draining | fail)
      scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true
      ;;
  esac
  sleep 0.5
done
echo "the Slurm node did not come up idle (state: ${state:-none}); last lines of the logs:" >&2
tail -n 5 "$log_dir/slurmctld.log" "$log_dir/slurmd.log" >&2 || true
exit 1

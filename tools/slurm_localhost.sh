#!/usr/bin/env bash
# A single-node Slurm cluster on this machine, to try `snakemake --profile profiles/slurm`
# without a real cluster (tests/test_slurm.py runs the profile on it). Needs root and Debian's
# slurmctld, slurmd, slurm-client and munge.
#
#   tools/slurm_localhost.sh start    # writes .cache/slurm/, links /etc/slurm/slurm.conf, starts daemons
#   tools/slurm_localhost.sh stop     # cancels its jobs, stops the daemons it started, removes the link
#
# start exits with status 3, changing nothing, where it will not run: not root, another cluster's
# configuration at /etc/slurm/slurm.conf, or Slurm daemons already running.
#
# SLURM_LOCAL_DIR: where the configuration, state and logs go (default .cache/slurm).
# SLURM_LOCAL_GPUS: GPUs the node advertises (default 0), and with them a second partition, gpu, of
# the same node. They are a generic resource without a device (File=/dev/null), so that GPU requests
# (`sbatch --gpus=1`) are scheduled and accounted on a machine that has none; the jobs see no CUDA
# device and train on the CPU.
set -euo pipefail
DIR=${SLURM_LOCAL_DIR:-$(pwd)/.cache/slurm}
GPUS=${SLURM_LOCAL_GPUS:-0}
CONF=$DIR/slurm.conf
LINK=/etc/slurm/slurm.conf

# Whether a live (not zombie) process of that name exists.
running() {
  local pid
  for pid in $(pgrep -x "$1"); do
    [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" = Z ] || return 0
  done
  return 1
}

start() {
  if [ "$(id -u)" != 0 ]; then
    echo "starting Slurm daemons needs root" >&2
    exit 3
  fi
  # Never replace a real cluster's configuration or share the machine with running daemons.
  if [ -e "$LINK" ] && [ "$(readlink "$LINK" 2>/dev/null)" != "$CONF" ]; then
    echo "$LINK exists and is not this script's: a Slurm cluster is configured here already" >&2
    exit 3
  fi
  if running slurmctld || running slurmd; then
    echo "slurmctld or slurmd is already running on this machine" >&2
    exit 3
  fi
  mkdir -p "$DIR/state" "$DIR/spool" /run/munge /etc/slurm
  chown munge:munge /run/munge
  if ! running munged; then
    runuser -u munge -- /usr/sbin/munged
    touch "$DIR/munged.started"  # stop ends munged only if this script started it
  fi
  local node cpus memory gres="" gpu_partition=""
  node=$(hostname)
  cpus=$(nproc)
  memory=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 2048 ))
  if [ "$GPUS" -gt 0 ]; then
    gres="Gres=gpu:$GPUS"
    gpu_partition="PartitionName=gpu Nodes=$node MaxTime=INFINITE State=UP"
    : > "$DIR/gres.conf"
    for _ in $(seq "$GPUS"); do echo "NodeName=$node Name=gpu File=/dev/null" >> "$DIR/gres.conf"; done
  fi
  cat > "$CONF" <<CONF
ClusterName=localhost
SlurmctldHost=$node(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
ReturnToService=2
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
# Finished jobs stay listed (squeue, scontrol) for 15 minutes: status checks and tests read them.
MinJobAge=900
KillWait=5
SlurmctldTimeout=30
SlurmdTimeout=30
GresTypes=gpu
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory $gres State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
$gpu_partition
CONF
  # Job steps lose SLURM_CONF (the executor plugin strips SLURM_* variables), so the
  # configuration must be at the default path.
  ln -sf "$CONF" "$LINK"
  slurmctld -f "$CONF"
  sleep 2
  slurmd -f "$CONF"
  for _ in $(seq 30); do
    if sinfo -h -o %T 2>/dev/null | grep -q idle; then sinfo; return 0; fi
    sleep 1
  done
  echo "slurm did not come up; see $DIR/*.log" >&2
  return 1
}

stop() {
  # Jobs first (a failed build may leave some running), then only the daemons started with this
  # configuration file (and munged if start started it).
  if [ "$(readlink "$LINK" 2>/dev/null)" = "$CONF" ]; then
    squeue -h -o %i 2>/dev/null | xargs -r scancel 2>/dev/null || true
  fi
  pkill -f "slurmd -f $CONF" || true
  pkill -f "slurmctld -f $CONF" || true
  if [ -e "$DIR/munged.started" ]; then
    pkill -x munged || true
    rm -f "$DIR/munged.started"
  fi
  for _ in $(seq 20); do
    pgrep -f "(slurmd|slurmctld) -f $CONF" > /dev/null || break
    sleep 0.5
  done
  if [ "$(readlink "$LINK" 2>/dev/null)" = "$CONF" ]; then rm -f "$LINK"; fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac

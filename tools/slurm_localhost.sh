#!/usr/bin/env bash
# A single-node Slurm cluster on this machine, to try `snakemake --profile profiles/slurm`
# without a real cluster. Needs root and Debian's slurmctld, slurmd, slurm-client and munge.
#
#   tools/slurm_localhost.sh start    # writes .cache/slurm/, links /etc/slurm/slurm.conf, starts daemons
#   tools/slurm_localhost.sh stop     # stops the daemons it started and removes the link
set -euo pipefail
DIR=${SLURM_LOCAL_DIR:-$(pwd)/.cache/slurm}
CONF=$DIR/slurm.conf

start() {
  mkdir -p "$DIR/state" "$DIR/spool" /run/munge /etc/slurm
  chown munge:munge /run/munge
  if ! pgrep -x munged >/dev/null; then
    runuser -u munge -- /usr/sbin/munged
  fi
  local node cpus memory
  node=$(hostname)
  cpus=$(nproc)
  memory=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 2048 ))
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
MinJobAge=300
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
CONF
  # Job steps lose SLURM_CONF (the executor plugin strips SLURM_* variables), so the
  # configuration must be at the default path.
  ln -sf "$CONF" /etc/slurm/slurm.conf
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
  # Only the daemons started with this configuration file.
  pkill -f "slurmd -f $CONF" || true
  pkill -f "slurmctld -f $CONF" || true
  if [ "$(readlink /etc/slurm/slurm.conf 2>/dev/null)" = "$CONF" ]; then rm -f /etc/slurm/slurm.conf; fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac

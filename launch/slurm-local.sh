#!/usr/bin/env bash
# A real single-node SLURM on this machine, for running launch/slurm.sbatch unchanged:
#   launch/slurm-local.sh up      # munged + slurmctld + slurmd, all files in $DN_SLURM_DIR
#   export SLURM_CONF=$DN_SLURM_DIR/slurm.conf; sbatch --nodes=1 --ntasks-per-node=2 ...
#   launch/slurm-local.sh down    # stops exactly the daemons it started (pid files), removes the dir
# Needs root and Debian's slurm-wlm and munge (apt-get install slurm-wlm munge). Ports 16817/16818
# and a private munge socket, so a system SLURM or munge (if any) is left alone.
set -euo pipefail
dir="${DN_SLURM_DIR:-/tmp/dn-slurm}"
conf="$dir/slurm.conf"
node="$(hostname)"

stop_pid() {  # stop one daemon we started, by its pid file
  local f="$1"
  [[ -f "$f" ]] || return 0
  local pid; pid="$(cat "$f")"
  if [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

case "${1:-}" in
up)
  for bin in munged slurmctld slurmd sbatch; do
    command -v "$bin" >/dev/null || { echo "slurm-local: $bin not found (apt-get install slurm-wlm munge)" >&2; exit 2; }
  done
  [[ -e "$dir/slurmctld.pid" ]] && { echo "slurm-local: already up in $dir (run down first)" >&2; exit 2; }
  mkdir -p "$dir"/{state,spool,munge}; chmod 755 "$dir"  # munged (user munge) must reach it
  chown munge:munge "$dir/munge"; chmod 755 "$dir/munge"  # munged wants its socket dir o+x
  # a private munge key: the machine's own (if any) is not touched
  dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
  chown munge:munge "$dir/munge/munge.key"; chmod 400 "$dir/munge/munge.key"
  runuser -u munge -- munged --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.sock" \
    --pid-file="$dir/munge/munged.pid" --log-file="$dir/munge/munged.log" \
    --seed-file="$dir/munge/munged.seed"
  cp "$dir/munge/munged.pid" "$dir/munged.pid"
  cat > "$conf" <<CONF
ClusterName=distnet
SlurmctldHost=$node
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.sock
CredType=cred/munge
SlurmctldPort=16817
SlurmdPort=16818
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
NodeName=$node CPUs=$(nproc) State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONF
  slurmctld -f "$conf"
  slurmd -f "$conf"
  export SLURM_CONF="$conf"
  for _ in $(seq 100); do
    sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)' && { echo "slurm-local: up ($conf)"; exit 0; }
    sleep 0.2
  done
  echo "slurm-local: node did not become idle; see $dir/*.log" >&2; exit 1 ;;
down)
  stop_pid "$dir/slurmd.pid"; stop_pid "$dir/slurmctld.pid"; stop_pid "$dir/munged.pid"
  rm -rf "$dir"; echo "slurm-local: down" ;;
*)
  echo "usage: launch/slurm-local.sh up|down" >&2; exit 2 ;;
esac

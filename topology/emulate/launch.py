"""Start MPI ranks inside the emulated hosts: Open MPI's ssh stand-in, a hostfile, the flags.

Open MPI's launcher runs `AGENT HOST CMD...` for every host; our agent maps the host's
management address to its namespace and runs CMD there (`ip netns exec`), so the daemons and
ranks live in the emulated hosts while mpirun stays in the root namespace on the management
bridge. The flags (measured on Open MPI 5.0 here):
- --prtemca plm_ssh_agent AGENT, --prtemca oob_tcp_if_include MGMT: launch and control traffic
  on the unshaped management network;
- --mca btl tcp,self --mca btl_tcp_if_include DATA: MPI's bytes on the cluster's data block
  (no shared memory between emulated hosts: they are separate machines);
- --mca coll ^han: han hangs every collective across these hosts (point-to-point works);
- --bind-to none: each daemon thinks it owns the whole machine and would pin rank 0 of every
  host to core 0;
- STACK_FLAGS (measured here, docs in the README's emulator section):
  btl_tcp_flags without `put`: with put, a rendezvous message is one fragment as large as the
  message, and the handshake of the opposite direction of an exchange queues behind all of it
  (an 8 MiB Sendrecv took 0.35 s or 0.70 s, bimodal; pipelined 128 KiB sends: 0.35 s always);
  btl_tcp_sndbuf/rcvbuf 64 KiB: a fixed socket buffer bounds the bytes queued at a shaper
  ahead of the next step's handshake, which in a ring shares a port with another flow's data
  (autotuned buffers of MiBs: ~7 ms per ring step at 0.2 Gb/s; 4 MiB ring 0.31 s -> 0.26 s,
  the wire time), and is still >> the bandwidth-delay product of a delay-free veth;
  mpi_yield_when_idle with a 20 us nanosleep: ranks waiting for data sleep instead of
  busy-polling, so on 2 cores the ranks that move bytes get the CPU (one pair exchanging next to
  2 polling ranks: 0.46-0.70 s -> 0.35 s).
"""

from __future__ import annotations

import math
import os
import shlex
import shutil
import sys
from pathlib import Path

from distnet.common.errors import UserError
from distnet.common.procgroup import FENCE_AGENT_ENV, Finished, run_job
from topology.emulate import state
from topology.emulate.plan import Plan
from topology.placement import place

PLACEMENTS = ("packed", "scattered", "random")


def agent_path(prefix: str) -> Path:
    return state.work_dir(prefix) / "agent"


def hostfile_path(prefix: str) -> Path:
    return state.work_dir(prefix) / "hostfile"


def agent_script(plan: Plan) -> str:
    # node01, node02, ...: the names launch/hostfile.example uses, so it runs here unchanged
    cases = "\n".join(f"  {h.mgmt_ip}|{h.name}|{h.namespace}|node{h.index + 1:02d}) "
                      f"ns={h.namespace} name={h.namespace} ;;" for h in plan.hosts)
    return f"""#!/bin/sh
# Open MPI ssh stand-in for the emulated cluster {plan.prefix!r}: AGENT [ssh options] HOST CMD...
# runs CMD inside HOST's network namespace (written by `python -m topology emulate up`).
while [ $# -gt 0 ]; do case "$1" in -*) shift ;; *) break ;; esac; done
host="$1"; shift
case "$host" in
{cases}
  *) echo "emulate agent: unknown host $host" >&2; exit 255 ;;
esac
# Its own UTS namespace too: Open MPI tells nodes apart by hostname (with one shared hostname,
# MPI_COMM_TYPE_SHARED groups ranks of different emulated hosts together).
exec ip netns exec "$ns" unshare --uts /bin/sh -c \
  'hostname "$0" && exec /bin/sh -c "$1"' "$name" "$*"
"""


def hostfile_text(plan: Plan, slots: int) -> str:
    lines = [f"# Emulated cluster {plan.prefix!r} ({plan.spec}): one line per host, its "
             "management address.",
             f"#   mpirun --hostfile {hostfile_path(plan.prefix)} "
             f"--prtemca plm_ssh_agent {agent_path(plan.prefix)} ... (see emulate run)"]
    lines += [f"{h.mgmt_ip} slots={slots}" for h in plan.hosts]
    return "\n".join(lines) + "\n"


def write_files(plan: Plan, slots: int) -> None:
    d = state.work_dir(plan.prefix)
    d.mkdir(parents=True, exist_ok=True)
    agent = agent_path(plan.prefix)
    agent.write_text(agent_script(plan))
    agent.chmod(0o755)
    hostfile_path(plan.prefix).write_text(hostfile_text(plan, slots))


SOCKET_BUF = 64 << 10
STACK_FLAGS = ("--mca", "btl_tcp_flags", "send,inplace,need-ack,need-csum",
               "--mca", "btl_tcp_sndbuf", str(SOCKET_BUF), "--mca", "btl_tcp_rcvbuf",
               str(SOCKET_BUF), "--mca", "mpi_yield_when_idle", "1",
               "--mca", "threads_pthreads_yield_strategy", "nanosleep",
               "--mca", "threads_pthreads_nanosleep_time", "20000")
BTLS = ("tcp,self", "tcp,self,sm")


def base_flags(plan: Plan, btl: str = "tcp,self") -> list[str]:
    """What every mpirun across the emulated hosts needs (module docstring says why). `btl`
    tcp,self,sm lets ranks of one emulated host share memory as on a real node (ULFM needs
    tcp,self)."""
    if btl not in BTLS:
        raise UserError(f"emulate run: btl must be one of {', '.join(BTLS)}, got {btl!r}")
    flags = ["--prtemca", "plm_ssh_agent", str(agent_path(plan.prefix)),
             "--prtemca", "oob_tcp_if_include", plan.mgmt_subnet,
             "--mca", "btl", btl, "--mca", "btl_tcp_if_include", plan.data_subnet,
             "--mca", "coll", "^han", "--bind-to", "none", *STACK_FLAGS]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        flags.append("--allow-run-as-root")
    return flags


def rank_hosts(plan: Plan, n: int, placement: str = "packed", ranks_per_host: int = 1,
               seed: int = 0) -> list[int]:
    """Host number of every rank: ranks_per_host consecutive ranks per host, hosts chosen by
    the simulator's placement rule (topology.placement) so both place ranks alike."""
    from topology.emulate.cluster import network_of

    if placement not in PLACEMENTS:
        raise UserError(f"emulate run: unknown placement {placement!r} "
                        f"(known: {', '.join(PLACEMENTS)})")
    if not 1 <= ranks_per_host <= 64:
        raise UserError(f"emulate run: --ranks-per-host must be 1..64, got {ranks_per_host}")
    if not 1 <= n <= len(plan.hosts) * ranks_per_host:
        raise UserError(f"emulate run: -n {n} ranks do not fit on {len(plan.hosts)} hosts x "
                        f"{ranks_per_host} ranks per host")
    _, extra = state.load(plan.prefix)
    net = network_of(plan.spec, extra.get("link_gbps"), extra.get("host_gbps"))
    hosts = place(net, math.ceil(n / ranks_per_host), mode=placement, seed=seed)
    return [int(hosts[r // ranks_per_host]) for r in range(n)]


def mpirun_cmd(plan: Plan, n: int, command: list[str], placement: str = "packed",
               ranks_per_host: int = 1, seed: int = 0, extra_flags: str | None = None,
               ft: bool = False, btl: str = "tcp,self") -> list[str]:
    """The full mpirun command line; extra_flags defaults to $MPIRUN_FLAGS (as launch/local.sh)."""
    if not command:
        raise UserError("emulate run: give the command after --, e.g. -- python -m distnet.bench")
    order = rank_hosts(plan, n, placement, ranks_per_host, seed)
    # --host a:K,b:K in placement order with --map-by slot: rank r lands on order[r]
    used: list[int] = []
    for h in order:
        if h not in used:
            used.append(h)
    counts = {h: order.count(h) for h in used}
    hosts = ",".join(f"{plan.hosts[h].mgmt_ip}:{counts[h]}" for h in used)
    here = str(Path(sys.executable).parent)
    mpirun = shutil.which("mpirun", path=here) or shutil.which("mpirun") or "mpirun"
    cores = os.cpu_count() or 1
    threads = str(max(1, cores // n))
    env = [f"{v}={os.environ.get(v, threads)}" for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")]
    extra = os.environ.get("MPIRUN_FLAGS", "") if extra_flags is None else extra_flags
    ulfm = ["--with-ft", "ulfm"] if ft else []
    # the ranks may fence a hung rank on another host the way mpirun reaches it: the agent
    fence = f"{FENCE_AGENT_ENV}={agent_path(plan.prefix)}"
    return [mpirun, "-n", str(n), "--host", hosts, "--map-by", "slot", *base_flags(plan, btl),
            *ulfm, *shlex.split(extra), "-x", env[0], "-x", env[1], "-x", fence, *command]


def run(plan: Plan, n: int, command: list[str], timeout_s: float | None = None,
        capture: bool = True, **kw: object) -> Finished:
    """Run `command` on n ranks of the emulated cluster in its own process group."""
    # run_job: under ULFM an aborted distnet job can leave mpirun with status 0; a run no
    # rank finished is then status 3, as with launch/local.sh and the supervisor
    return run_job(mpirun_cmd(plan, n, command, **kw),  # type: ignore[arg-type]
                   timeout_s, capture=capture)



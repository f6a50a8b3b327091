"""The modelled cluster on one Linux machine: namespaces as hosts and switches, veth cables
shaped per direction, kernel ECMP routing, a management bridge, and mpirun across it.

plan (spec -> plain data) -> kernel (ip/tc commands) -> cluster (up/down/status/link) ->
launch (agent, hostfile, mpirun flags). `python -m topology emulate -h` is the CLI.
"""

from topology.emulate.cluster import down, leftovers, link, set_rate, status, up
from topology.emulate.launch import mpirun_cmd, rank_hosts
from topology.emulate.plan import Plan, build_plan

__all__ = ["Plan", "build_plan", "down", "leftovers", "link", "mpirun_cmd", "rank_hosts",
           "set_rate", "status", "up"]

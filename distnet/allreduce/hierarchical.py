"""Hierarchical (topology-aware) all-reduce: reduce within each node, ring across node leaders,
broadcast within each node.

Only one rank per node (its leader, the node's smallest rank) touches the slow inter-node links,
and it moves 2((m−1)/m)n bytes there instead of every rank doing so. Run blocking, inside a node
it is `shm` (the shared-window all-reduce, no transport copies) and the leader then broadcasts
the result back; the schedule (`hierarchical_schedule`, which the simulator replays and the
non-blocking `start` runs) models the node part as a binomial tree to the leader and back.
Which ranks share a node comes from `MPI.COMM_TYPE_SHARED`, or from DISTNET_RANKS_PER_NODE=k
(ranks r // k form a node) so that tests can emulate several nodes on one machine; the map is
computed once per communicator.

Cost (k ranks per node, m nodes, L = ⌈log2 k⌉; intra-node β_in, inter-node β_out):
    schedule:  2Lα + 2L·nβ_in + L·nγ  +  2(m−1)α + 2((m−1)/m)nβ_out + ((m−1)/m)nγ
    blocking:  shm's (module distnet.allreduce.shm)  +  the same ring  +  a node broadcast
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from distnet.allreduce.mpi import ScheduleRequest, comm_state, execute, start_schedule
from distnet.allreduce.ops import SUM, ReduceOp, resolve_op
from distnet.allreduce.ring import ring_step_fn
from distnet.allreduce.schedule import Schedule, Step, make_step
from distnet.common.errors import UserError

RANKS_PER_NODE_ENV = "DISTNET_RANKS_PER_NODE"


def hierarchical_schedule(p: int, n: int, node_of: Sequence[int] | None = None,
                          **_: Any) -> Schedule:
    """Intra-node binomial reduce, ring among leaders, intra-node binomial broadcast; O(p)/step."""
    nodes = np.zeros(p, dtype=np.int64) if node_of is None else np.asarray(node_of, np.int64)
    if nodes.shape != (p,):
        raise UserError(f"node_of has {nodes.shape[0]} entries for {p} ranks")
    by_node = np.argsort(nodes, kind="stable")  # ranks grouped by node, ascending inside
    _ids, first, size = np.unique(nodes[by_node], return_index=True, return_counts=True)
    node_idx = np.searchsorted(nodes[by_node][first], nodes)  # 0..m−1 per rank
    local = np.empty(p, dtype=np.int64)
    local[by_node] = np.arange(p) - np.repeat(first, size)
    start, width = first[node_idx], size[node_idx]
    leaders = by_node[first]
    levels = int(size.max() - 1).bit_length() if p else 0
    ring_len = 2 * (leaders.shape[0] - 1)
    leader_ring = ring_step_fn(leaders, n)

    def step(s: int) -> Step:
        if s < levels:  # binomial reduce to local rank 0, round s
            src = np.flatnonzero((local & ((2 << s) - 1)) == (1 << s))
            return make_step(src, by_node[start[src] + local[src] - (1 << s)], 0, n, True)
        if s < levels + ring_len:
            return leader_ring(s - levels)
        k = 2 * levels + ring_len - 1 - s  # binomial broadcast, rounds in reverse
        src = np.flatnonzero(((local & ((2 << k) - 1)) == 0) & (local + (1 << k) < width))
        return make_step(src, by_node[start[src] + local[src] + (1 << k)], 0, n, False)

    nsteps = 2 * levels + ring_len if p > 1 else 0
    return Schedule("hierarchical", p, n, nsteps, step, None,
                    {"nodes": int(leaders.shape[0]), "levels": levels})


def _ranks_per_node_from_env(comm: Any) -> int | None:
    """DISTNET_RANKS_PER_NODE as every rank of comm sees it (collective once per comm): mpirun
    does not pass a shell variable to other hosts unless told (`-x`), and ranks that disagree
    would take different collective paths and hang."""
    state = comm_state(comm)
    if state.ranks_per_node_env is None:
        seen = sorted(set(comm.allgather(os.environ.get(RANKS_PER_NODE_ENV, ""))))
        if len(seen) > 1:
            raise UserError(f"{RANKS_PER_NODE_ENV} differs between ranks ({_listed(seen)}): set "
                            f"it for every rank (mpirun -x {RANKS_PER_NODE_ENV}) or for none")
        state.ranks_per_node_env = seen[0]
    raw = state.ranks_per_node_env
    if not raw:
        return None
    try:
        k = int(raw)
    except ValueError:
        k = 0
    if k < 1:
        raise UserError(f"{RANKS_PER_NODE_ENV} must be a positive integer, got {raw!r}")
    return k


def _listed(values: list[str]) -> str:
    shown = ", ".join(repr(v[:20]) if v else "unset" for v in values[:3])
    return shown + (", ..." if len(values) > 3 else "")


def node_map(comm: Any, ranks_per_node: int | None = None) -> tuple[int, ...]:
    """Node id of every rank of comm (collective the first time per comm and setting; kept in
    the communicator's CommState)."""
    from mpi4py import MPI

    k = ranks_per_node if ranks_per_node is not None else _ranks_per_node_from_env(comm)
    if k is not None and k < 1:
        raise UserError(f"ranks_per_node must be positive, got {k}")
    cached = comm_state(comm).node_maps  # few keys: one per setting a program uses
    if k not in cached:
        if k is not None:
            cached[k] = tuple(r // k for r in range(comm.Get_size()))
        else:
            shared = comm.Split_type(MPI.COMM_TYPE_SHARED)
            leader = shared.allreduce(comm.Get_rank(), op=MPI.MIN)
            shared.Free()
            cached[k] = tuple(comm.allgather(leader))
    return cached[k]


def hierarchical_allreduce(comm: Any, buf: np.ndarray, op: Any = SUM,
                           ranks_per_node: int | None = None) -> None:
    """`shm` in node, ring across leaders, broadcast in node (cost in the module docstring)."""
    from distnet.allreduce.mpi import validate
    from distnet.allreduce.ring import ring_schedule

    validate(buf)  # a bad buffer or op fails here, on every rank, before any communication
    resolve_op(op)
    nodes = node_map(comm, ranks_per_node)
    if comm.Get_size() == 1:
        return
    node, leaders, shm = _node_parts(comm, nodes)
    if node.Get_size() > 1:
        shm(node, buf, op=op)
    if leaders is not None and leaders.Get_size() > 1:
        execute(leaders, buf, ring_schedule, op)
    if node.Get_size() > 1:
        # a 16-bit float (compression's wire types) travels as its bits: mpi4py has no bfloat16
        node.Bcast(buf.view(np.uint16) if buf.dtype.itemsize == 2 else buf, root=0)


def _node_parts(comm: Any, nodes: tuple[int, ...]) -> tuple[Any, Any, Any]:
    """(my node's communicator, the leaders' one or None off leaders, the shm that reduces on
    the node's), made once per communicator and node map (collective then) and kept in its
    CommState.

    Each communicator gets its own ShmAllreduce rather than the registry's: that one's cache
    evicts windows by its own history, which differs between ranks of different nodes (each
    holds its own node's communicator), and an eviction is a collective Win.Free — a rank
    freeing a window its peers still use hangs them. One node communicator per instance
    never evicts anything.
    """
    from mpi4py import MPI

    from distnet.allreduce.shm import ShmAllreduce

    state = comm_state(comm)
    parts = state.node_parts.get(nodes)
    if parts is None:
        rank = comm.Get_rank()
        node = comm.Split(nodes[rank], key=rank)
        first = node.Get_rank() == 0
        leaders = comm.Split(0 if first else MPI.UNDEFINED, key=rank)
        parts = state.node_parts[nodes] = (
            node, None if leaders == MPI.COMM_NULL else leaders, ShmAllreduce(max_comms=1))
    return parts


def hierarchical_start(comm: Any, buf: np.ndarray, op: ReduceOp) -> ScheduleRequest:
    """Non-blocking form of hierarchical_allreduce (for `mpi.start`)."""
    return start_schedule(comm, buf, hierarchical_schedule, op, node_of=node_map(comm))

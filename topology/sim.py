"""Replay an all-reduce schedule on a modelled network: flow-level, max-min fair, event-driven.

Cost of one transfer (a message of b bytes from rank src to rank dst in step s):
  start      when src and dst have both finished all their transfers of steps < s (MPI semantics)
  + alpha_s  software overhead, then the flow enters the network
  + b / rate drained at its max-min fair rate, recomputed whenever a flow enters or drains
  + latency  path latency: links + switches of its route (max over paths for ideal spreading)
  + gamma*b  reduction at the receiver when `reduce` is set, one reduction at a time per rank.

Engines of that one model:
- "exact" (`topology.exact` + `topology.kernel`): one global event loop in which flows of every
  step compete, max-min re-solved only on the component an event touches, steps streamed;
  deterministic (time, then sequence number), with an optional event log.
- "fast" (`topology.fast`): step by step, memoised per pattern; exact when no link carries two
  transfers that can overlap (proved by `never_overlap`), approximate otherwise.
- "reference" (`topology.reference`): the original exact loop, the tests' oracle (small runs).
- "auto": fast where it is proved exact, exact elsewhere; `SimResult.engine_note` says why.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from distnet.allreduce.schedule import Schedule
from distnet.common.errors import UserError
from topology.fast import never_overlap, run_fast
from topology.network import Network
from topology.routing import Routes, route

# Defaults, each with its reason (also in docs/topology-sim.md):
# ~1 us is the per-message software cost of an RDMA MPI stack (post, poll, match) on top of wire.
ALPHA_S = 1.0e-6
# Reduction at ~200 GB/s (an accelerator, or a many-core socket at memory bandwidth): a 400G
# cluster keeps the network the bottleneck; `calibrate` fits the real one for the NumPy trainer.
GAMMA_S_PER_BYTE = 5.0e-12
# The reference engine materialises every transfer and re-solves all flows per event.
REFERENCE_LIMIT_TRANSFERS = 2_000_000
# The exact engine streams steps (memory follows the steps in flight), but its time grows with
# the transfers: ~0.6 us of CPU each compiled for a congested ring (docs/topology-sim.md, measured
# 2026-12-02); 200 us is the estimate without Numba.
EXACT_LIMIT_TRANSFERS = 400_000_000
EXACT_S_PER_TRANSFER = {True: 0.6e-6, False: 200e-6}
PURE_LIMIT_S = 600.0  # refuse an uncompiled exact run expected to take longer than this
LOG_LIMIT_TRANSFERS = 2_000_000  # the event log keeps 3 records per transfer in memory

ENGINES = ("auto", "exact", "fast", "reference")


@dataclass(frozen=True)
class SimResult:
    time_s: float
    algbw_gbps: float  # buffer bytes / time, in Gb/s
    busbw_gbps: float  # algbw * 2(p-1)/p: the ring-normalised bandwidth NCCL reports
    step_start_s: np.ndarray  # (nsteps,) first transfer of the step starts
    step_end_s: np.ndarray  # (nsteps,) last transfer of the step completes
    link_bytes: np.ndarray  # (L,) bytes each directed link carried over the run
    link_util: np.ndarray  # (L,) link_bytes / (capacity * time_s)
    busiest: list[tuple[str, float]]  # (link name, utilisation), busiest first
    engine: str
    patterns_solved: int
    steps_reused: int
    log: list[tuple[float, str, int, int, int]] | None = field(default=None, repr=False)
    engine_note: str = ""  # why this engine (auto's proof or the reason it went exact)

    @property
    def max_link_util(self) -> float:
        return float(self.link_util.max()) if self.link_util.size else 0.0


def simulate(
    net: Network,
    schedule: Schedule,
    placement: np.ndarray,
    routing: str = "ecmp",
    seed: int = 0,
    itemsize: int = 4,
    alpha_s: float = ALPHA_S,
    gamma_s_per_byte: float = GAMMA_S_PER_BYTE,
    log: bool = False,
    engine: str = "auto",
    memoise: bool = True,
    top_links: int = 5,
    route_fn: Callable[..., Routes] | None = None,
) -> SimResult:
    """Time `schedule` on `net` with rank r on host placement[r]; see the module docstring.

    route_fn replaces `topology.routing.route` (same signature), e.g. to replay measured paths;
    by default this module's `route` is used."""
    rf = route if route_fn is None else route_fn
    from topology import kernel
    from topology.routing import MODES

    placement = np.asarray(placement, dtype=np.int64)
    _check(net, schedule, placement, engine, log, alpha_s, gamma_s_per_byte, itemsize)
    if routing not in MODES:
        raise UserError(f"unknown routing mode {routing!r} (known: {', '.join(MODES)})")
    cap = net.link_gbps * (1e9 / 8.0)  # bytes per second
    bound = schedule.p * schedule.nsteps  # transfers, at most
    note = ""
    if engine == "auto":
        if log:
            engine, note = "exact", "exact: the event log comes from the exact engine"
        else:
            proved, why = never_overlap(net, schedule, placement, routing, seed, rf)
            engine, note = ("fast", f"fast, proved exact: {why}") if proved else \
                ("exact", f"exact: the fast engine is not provably exact here ({why})")
    if engine == "exact":
        _check_exact_cost(bound, kernel.COMPILED)
    solved = reused = 0
    events = None
    if engine == "exact":
        from topology.exact import run_exact

        ex = run_exact(net, schedule, placement, routing, seed, itemsize, alpha_s,
                       gamma_s_per_byte, cap, log, 3 * bound if log else 0, rf)
        time_s, start_s, end_s, link_bytes, events = (ex.time_s, ex.step_start_s,
                                                      ex.step_end_s, ex.link_bytes, ex.log)
        note = note or "exact"
    elif engine == "reference":
        from topology.reference import run_reference

        time_s, start_s, end_s, link_bytes, solved, reused, events = run_reference(
            net, schedule, placement, routing, seed, itemsize, alpha_s, gamma_s_per_byte, cap,
            log, rf)
        note = "reference: the original exact event loop"
    else:
        time_s, start_s, end_s, link_bytes, solved, reused = run_fast(
            net, schedule, placement, routing, seed, itemsize, alpha_s, gamma_s_per_byte, cap,
            memoise, rf)
        note = note or "fast: exact only where steps do not overlap (see never_overlap)"
    if not math.isfinite(time_s):
        raise UserError("the simulation produced a non-finite time (check rates and sizes)")
    n_bytes = schedule.n * itemsize
    algbw = n_bytes * 8 / time_s / 1e9 if time_s > 0 else float("inf")
    p = schedule.p
    busbw = algbw * 2 * (p - 1) / p
    util = link_bytes / (cap * time_s) if time_s > 0 else np.zeros_like(link_bytes)
    order = np.argsort(-util, kind="stable")[:top_links]
    busiest = [(link_name(net, int(i)), float(util[i])) for i in order if link_bytes[i] > 0]
    return SimResult(time_s, algbw, busbw, start_s, end_s, link_bytes, util, busiest, engine,
                     solved, reused, events, note)


@dataclass(frozen=True)
class AllreduceRun:
    """One simulated all-reduce and what it was made of."""

    result: SimResult
    schedule: Schedule
    hosts: np.ndarray  # rank -> host number
    node_of: list[int] | None  # hierarchical's node of each rank (its edge switch), else None
    nbytes: int  # bytes reduced: whole elements of itemsize


def simulate_allreduce(net: Network, algorithm: str, ranks: int, nbytes: int, itemsize: int = 4,
                       placement: str = "packed", routing: str = "ecmp", seed: int = 0,
                       alpha_s: float | None = None, gamma_s_per_byte: float | None = None,
                       engine: str = "auto") -> AllreduceRun:
    """Place `ranks` ranks on `net`, build `algorithm`'s schedule for nbytes and simulate it:
    the one way the topology CLI and distnet's what-if analysis time an all-reduce.
    None for alpha_s / gamma_s_per_byte means the simulator's defaults."""
    from distnet.allreduce.registry import get_schedule
    from topology.placement import check_fits, node_of_ranks, place

    if int(ranks) != ranks or ranks < 1:
        raise UserError(f"ranks must be a whole number >= 1, got {ranks!r}")
    check_fits(net, int(ranks))
    builder = get_schedule(algorithm)
    hosts = place(net, int(ranks), mode=placement, seed=seed)
    n = max(1, int(nbytes) // itemsize)
    node_of = node_of_ranks(net, hosts).tolist() if algorithm == "hierarchical" else None
    sched = builder(int(ranks), n, **({"node_of": node_of} if node_of is not None else {}))
    res = simulate(net, sched, hosts, routing=routing, seed=seed, itemsize=itemsize,
                   alpha_s=ALPHA_S if alpha_s is None else alpha_s,
                   gamma_s_per_byte=GAMMA_S_PER_BYTE if gamma_s_per_byte is None
                   else gamma_s_per_byte, engine=engine)
    return AllreduceRun(res, sched, hosts, node_of, n * itemsize)


def link_name(net: Network, i: int) -> str:
    """`edge(0,1)->agg(0,0)`: a directed link by its endpoints' readable ids."""
    u, v = net.node_names[int(net.link_u[i])], net.node_names[int(net.link_v[i])]
    return f"{_node(u)}->{_node(v)}"


def _node(name: tuple) -> str:
    return f"{name[0]}({','.join(str(x) for x in name[1:])})"


def _check_exact_cost(transfers: int, compiled: bool) -> None:
    """Refuse, before allocating anything, an exact run that cannot finish in reasonable time."""
    est_s = transfers * EXACT_S_PER_TRANSFER[compiled]
    if transfers > EXACT_LIMIT_TRANSFERS or (not compiled and est_s > PURE_LIMIT_S):
        how = "" if compiled else " without Numba (pip install numba: ~100x faster)"
        raise UserError(
            f"up to {transfers:,} transfers: the exact engine would take ~{est_s / 60:,.0f} min"
            f"{how}; use engine='fast' (step by step, approximate where steps overlap)")


def _finite_nonneg(name: str, x: float) -> None:
    if not (isinstance(x, (int, float, np.floating, np.integer)) and math.isfinite(x)
            and x >= 0):
        raise UserError(f"{name} must be a finite number >= 0, got {x!r}")


def _check(net: Network, schedule: Schedule, placement: np.ndarray, engine: str, log: bool,
           alpha_s: float, gamma_s_per_byte: float, itemsize: int) -> None:
    """The engine's own guard: whatever a CLI let through, non-finite or negative rates, times
    and sizes never reach an event loop (a NaN time would never compare as 'later')."""
    if engine not in ENGINES:
        raise UserError(f"unknown engine {engine!r} (known: {', '.join(ENGINES)})")
    if log and engine == "fast":
        raise UserError("the event log needs an event-driven engine (engine='exact')")
    bound = schedule.p * schedule.nsteps
    if engine == "reference" and bound > REFERENCE_LIMIT_TRANSFERS:
        raise UserError(f"{bound:,} transfers are too many for the reference engine; use "
                        "engine='exact'")
    if log and bound > LOG_LIMIT_TRANSFERS:
        raise UserError(f"an event log of up to {bound:,} transfers would need "
                        f"~{bound * 3 * 17 / 2**30:.1f} GiB; log at most "
                        f"{LOG_LIMIT_TRANSFERS:,} transfers")
    if placement.shape != (schedule.p,):
        raise UserError(f"placement has {placement.shape[0]} hosts for {schedule.p} ranks")
    n_hosts = int(net.hosts.shape[0])
    if placement.size and (placement.min() < 0 or placement.max() >= n_hosts):
        raise UserError(f"placement names a host outside 0..{n_hosts - 1}")
    _finite_nonneg("alpha_s", alpha_s)
    _finite_nonneg("gamma_s_per_byte", gamma_s_per_byte)
    if int(itemsize) != itemsize or itemsize < 1:
        raise UserError(f"itemsize must be a positive integer, got {itemsize!r}")
    if not np.all((net.link_gbps > 0) & np.isfinite(net.link_gbps)):
        raise UserError("every link needs a positive, finite bandwidth")
    if not (np.all(np.isfinite(net.link_latency_s)) and np.all(net.link_latency_s >= 0)):
        raise UserError("every link needs a finite latency >= 0")
    _finite_nonneg("switch latency", net.switch_latency_s)

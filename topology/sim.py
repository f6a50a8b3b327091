"""Replay an all-reduce schedule on a modelled network: flow-level, max-min fair, event-driven.

Cost of one transfer (a message of b bytes from rank src to rank dst in step s):
  start      when src and dst have both finished all their transfers of steps < s (MPI semantics)
  + alpha_s  software overhead, then the flow enters the network
  + b / rate drained at its max-min fair rate, recomputed whenever a flow enters or drains
  + latency  path latency: links + switches of its route (max over paths for ideal spreading)
  + gamma*b  reduction at the receiver when `reduce` is set, one reduction at a time per rank.

Two engines share that model:
- "exact": one global event loop (heap ordered by time, then sequence number) in which flows of
  every step compete for bandwidth; deterministic, with an optional event log.
- "fast": step by step. Each step's flows share bandwidth among themselves as if they entered
  together (the within-step drain times are an event loop of their own), memoised per
  `schedule.pattern(s)`; start times, latencies and per-rank dependencies are then propagated
  exactly with vectorised max-plus updates. It equals "exact" whenever the flows of a step do
  start together, or never share a link with another step's flows; otherwise it ignores how
  neighbouring steps overlap (up to ~10 % pessimistic in docs/topology-sim.md). It is what
  makes 55,294 ring steps on 27,648 hosts feasible.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable
from dataclasses import dataclass, field

import numpy as np

from distnet.allreduce.schedule import Schedule, Step
from distnet.common.errors import UserError
from topology.maxmin import link_load, max_min_rates
from topology.network import Network
from topology.routing import Routes, route

# Defaults, each with its reason (also in docs/topology-sim.md):
# ~1 us is the per-message software cost of an RDMA MPI stack (post, poll, match) on top of wire.
ALPHA_S = 1.0e-6
# Reduction at ~200 GB/s (an accelerator, or a many-core socket at memory bandwidth): a 400G
# cluster keeps the network the bottleneck; `calibrate` fits the real one for the NumPy trainer.
GAMMA_S_PER_BYTE = 5.0e-12
# Above this many transfers the exact engine's Python event loop gets slow; "auto" goes fast.
EXACT_MAX_TRANSFERS = 20_000
# The exact engine materialises every transfer; beyond this it would take hours.
EXACT_LIMIT_TRANSFERS = 2_000_000
# A flow with at most this fraction of its bytes left has drained (float round-off, not data).
DRAIN_REL = 1e-9

ENGINES = ("auto", "exact", "fast")


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
) -> SimResult:
    """Time `schedule` on `net` with rank r on host placement[r]; see the module docstring."""
    placement = np.asarray(placement, dtype=np.int64)
    _check(net, schedule, placement, engine, log, alpha_s, gamma_s_per_byte)
    cap = net.link_gbps * (1e9 / 8.0)  # bytes per second
    total = schedule.p * schedule.nsteps  # upper bound is enough to choose
    if engine == "auto":
        engine = "exact" if (log or total <= EXACT_MAX_TRANSFERS) else "fast"
    if engine == "exact":
        out = _run_exact(net, schedule, placement, routing, seed, itemsize, alpha_s,
                         gamma_s_per_byte, cap, log)
    else:
        out = _run_fast(net, schedule, placement, routing, seed, itemsize, alpha_s,
                        gamma_s_per_byte, cap, memoise)
    time_s, start_s, end_s, link_bytes, solved, reused, events = out
    n_bytes = schedule.n * itemsize
    algbw = n_bytes * 8 / time_s / 1e9 if time_s > 0 else float("inf")
    p = schedule.p
    busbw = algbw * 2 * (p - 1) / p
    util = link_bytes / (cap * time_s) if time_s > 0 else np.zeros_like(link_bytes)
    order = np.argsort(-util, kind="stable")[:top_links]
    busiest = [(link_name(net, int(i)), float(util[i])) for i in order if link_bytes[i] > 0]
    return SimResult(time_s, algbw, busbw, start_s, end_s, link_bytes, util, busiest, engine,
                     solved, reused, events)


def link_name(net: Network, i: int) -> str:
    """`edge(0,1)->agg(0,0)`: a directed link by its endpoints' readable ids."""
    u, v = net.node_names[int(net.link_u[i])], net.node_names[int(net.link_v[i])]
    return f"{_node(u)}->{_node(v)}"


def _node(name: tuple) -> str:
    return f"{name[0]}({','.join(str(x) for x in name[1:])})"


def _check(net: Network, schedule: Schedule, placement: np.ndarray, engine: str, log: bool,
           alpha_s: float, gamma_s_per_byte: float) -> None:
    if engine not in ENGINES:
        raise UserError(f"unknown engine {engine!r} (known: {', '.join(ENGINES)})")
    if log and engine == "fast":
        raise UserError("the event log needs the exact engine (engine='exact')")
    if engine == "exact" and schedule.p * schedule.nsteps > EXACT_LIMIT_TRANSFERS:
        raise UserError(f"{schedule.p * schedule.nsteps:,} transfers are too many for the exact "
                        "engine; use engine='fast'")
    if placement.shape != (schedule.p,):
        raise UserError(f"placement has {placement.shape[0]} hosts for {schedule.p} ranks")
    n_hosts = int(net.hosts.shape[0])
    if placement.size and (placement.min() < 0 or placement.max() >= n_hosts):
        raise UserError(f"placement names a host outside 0..{n_hosts - 1}")
    if alpha_s < 0 or gamma_s_per_byte < 0:
        raise UserError("alpha_s and gamma_s_per_byte must be >= 0")
    if not np.all((net.link_gbps > 0) & np.isfinite(net.link_gbps)):
        raise UserError("every link needs a positive, finite bandwidth")


def _sub_routes(routes: Routes, flows: np.ndarray, hops: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The CSR rows of `flows` (in that order) as a new CSR: ptr, link, frac.
    `hops` (entries per flow, np.diff(flow_ptr)) can be passed in when it is reused."""
    counts = (np.diff(routes.flow_ptr) if hops is None else hops)[flows]
    ptr = np.zeros(flows.shape[0] + 1, dtype=np.int64)
    np.cumsum(counts, out=ptr[1:])
    idx = np.repeat(routes.flow_ptr[flows] - ptr[:-1], counts) + np.arange(ptr[-1])
    return ptr, routes.link[idx], routes.frac[idx]


# ---------------------------------------------------------------------------------------------
# Exact engine: one global event loop.

_INJECT, _ARRIVE, _DONE = 0, 1, 2


def _cat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


# time_s, step_start_s, step_end_s, link_bytes, patterns solved, steps reused, event log
_Run = tuple[float, np.ndarray, np.ndarray, np.ndarray, int, int,
             list[tuple[float, str, int, int, int]] | None]


def _run_exact(net: Network, schedule: Schedule, placement: np.ndarray, routing: str, seed: int,
               itemsize: int, alpha_s: float, gamma: float, cap: np.ndarray,
               want_log: bool) -> _Run:
    steps: list[Step] = list(schedule.steps())
    sizes = [len(st) for st in steps]
    t_step = np.repeat(np.arange(len(steps), dtype=np.int64), sizes)
    t_src = _cat([st.src for st in steps]).astype(np.int64)
    t_dst = _cat([st.dst for st in steps]).astype(np.int64)
    t_bytes = _cat([st.count for st in steps]).astype(np.float64) * itemsize
    t_reduce = np.concatenate([st.reduce for st in steps]) if steps else np.zeros(0, bool)
    routes = route(net, placement[t_src], placement[t_dst], mode=routing, seed=seed)
    n_entries = np.diff(routes.flow_ptr)
    has_links = n_entries > 0
    n_t = t_src.shape[0]

    # remaining[(rank, step)] transfers of rank in step; each rank walks its own list of steps.
    remaining: dict[tuple[int, int], int] = {}
    members: dict[tuple[int, int], list[int]] = {}
    for i in range(n_t):
        s = int(t_step[i])
        for r in {int(t_src[i]), int(t_dst[i])}:
            remaining[(r, s)] = remaining.get((r, s), 0) + 1
            members.setdefault((r, s), []).append(i)
    rank_steps: dict[int, list[int]] = {}
    for r, s in sorted(remaining):
        rank_steps.setdefault(r, []).append(s)
    pos = {r: 0 for r in rank_steps}

    def current(r: int) -> int:
        lst = rank_steps[r]
        return lst[pos[r]] if pos[r] < len(lst) else -1

    heap: list[tuple[float, int, int, int]] = []
    seq = 0
    events: list[tuple[float, str, int, int, int]] = []
    started = np.zeros(n_t, dtype=bool)
    start_s = np.full(len(steps), np.inf)
    end_s = np.zeros(len(steps))
    compute_free: dict[int, float] = {}

    def note(t: float, kind: str, i: int) -> None:
        if want_log:
            events.append((t, kind, int(t_step[i]), int(t_src[i]), int(t_dst[i])))

    def push(t: float, kind: int, i: int) -> None:
        nonlocal seq
        heapq.heappush(heap, (t, seq, kind, i))
        seq += 1

    def start_ready(t: float, ranks: list[int]) -> None:
        cand: set[int] = set()
        for r in ranks:
            s = current(r)
            for i in members.get((r, s), []):
                other = int(t_dst[i]) if int(t_src[i]) == r else int(t_src[i])
                if not started[i] and current(other) == s:
                    cand.add(i)
        for i in sorted(cand):
            started[i] = True
            note(t, "start", i)
            s = int(t_step[i])
            start_s[s] = min(start_s[s], t)
            push(t + alpha_s, _INJECT, i)

    start_ready(0.0, sorted(rank_steps))
    active = np.zeros(0, dtype=np.int64)
    rem = np.zeros(0)
    rate = np.zeros(0)
    dirty = False
    now = 0.0
    # Flows on each link. A flow entering or leaving links no other flow uses changes nobody
    # else's max-min rate (components are independent), so only then is the solve skipped.
    on_link = np.zeros(cap.shape[0], dtype=np.int64)
    fptr = routes.flow_ptr

    def links(i: int) -> np.ndarray:
        return routes.link[fptr[i]:fptr[i + 1]]

    def drained(t: float, i: int) -> None:
        note(t, "drain", i)
        push(t + float(routes.latency_s[i]), _ARRIVE, i)

    while heap or active.size:
        if dirty and active.size:
            ptr, lk, fr = _sub_routes(routes, active, n_entries)
            rate = max_min_rates(ptr, lk, fr, cap)
            dirty = False
        t_heap = heap[0][0] if heap else np.inf
        t_drain = now + float((rem / rate).min()) if active.size else np.inf
        if t_drain <= t_heap:
            rem = rem - rate * (t_drain - now)
            now = t_drain
            done = rem <= DRAIN_REL * t_bytes[active]
            done[int(np.argmin(rem))] = True
            for i in active[done]:
                drained(now, int(i))
                np.subtract.at(on_link, links(int(i)), 1)
            for i in active[done]:
                dirty = dirty or bool(on_link[links(int(i))].any())
            active, rem, rate = active[~done], rem[~done], rate[~done]
            continue
        if active.size:
            rem = rem - rate * (t_heap - now)
        now = t_heap
        while heap and heap[0][0] == now:
            _, _, kind, i = heapq.heappop(heap)
            if kind == _INJECT:
                if t_bytes[i] == 0 or not has_links[i]:
                    drained(now, i)
                else:
                    lk = links(i)
                    alone = not dirty and not on_link[lk].any()
                    np.add.at(on_link, lk, 1)
                    active = np.append(active, i)
                    rem = np.append(rem, t_bytes[i])
                    # alone: its bottleneck is its narrowest link, as progressive filling says
                    fr = routes.frac[fptr[i]:fptr[i + 1]]
                    rate = np.append(rate, float((cap[lk] / fr).min()) if alone else 0.0)
                    dirty = dirty or not alone
            elif kind == _ARRIVE:
                done_t = now
                if t_reduce[i]:
                    d = int(t_dst[i])
                    done_t = max(now, compute_free.get(d, 0.0)) + gamma * t_bytes[i]
                    compute_free[d] = done_t
                push(done_t, _DONE, i)
            else:
                note(now, "done", i)
                s = int(t_step[i])
                end_s[s] = max(end_s[s], now)
                moved = []
                for r in sorted({int(t_src[i]), int(t_dst[i])}):
                    remaining[(r, s)] -= 1
                    if remaining[(r, s)] == 0:
                        pos[r] += 1
                        moved.append(r)
                if moved:
                    start_ready(now, moved)
    start_s[~np.isfinite(start_s)] = 0.0
    link_bytes = link_load(routes.flow_ptr, routes.link, routes.frac, t_bytes, cap.shape[0])
    time_s = float(end_s.max()) if len(steps) else 0.0
    return time_s, start_s, end_s, link_bytes, 0, 0, (events if want_log else None)


# ---------------------------------------------------------------------------------------------
# Fast engine: step by step, memoised per pattern.


@dataclass
class _Solved:
    """A step's network part; `reduce` is not in a pattern key, so it is applied per step."""

    src: np.ndarray
    dst: np.ndarray
    count: np.ndarray
    net_s: np.ndarray  # alpha + drain + latency of each transfer, as if the step starts together
    reduce_s: np.ndarray  # gamma * bytes: the reduction, if the step's transfer reduces
    unique_src: bool
    unique_dst: bool  # else a receiver may reduce twice in one step: serialise its reductions
    link: np.ndarray
    link_bytes: np.ndarray
    # Every rank sends once and receives once (ring, recursive doubling, ...): the ready-time
    # update can then be done with gathers through the inverse permutations (cheaper than
    # scatters); None also means "src is the identity", which skips a gather altogether.
    permutation: bool = False
    inv_src: np.ndarray | None = None
    inv_dst: np.ndarray | None = None
    src_identity: bool = False
    uses: int = 0


def _drain_times(routes: Routes, nbytes: np.ndarray, cap: np.ndarray) -> np.ndarray:
    """Drain time of each flow when all enter at t=0: the step's own little event loop."""
    drain = np.zeros(nbytes.shape[0])
    live = np.flatnonzero((nbytes > 0) & (np.diff(routes.flow_ptr) > 0))
    rem = nbytes[live].astype(np.float64)
    t = 0.0
    while live.size:
        ptr, lk, fr = _sub_routes(routes, live)
        rate = max_min_rates(ptr, lk, fr, cap)
        dt = float((rem / rate).min())
        t += dt
        rem = rem - rate * dt
        done = rem <= DRAIN_REL * nbytes[live]
        done[int(np.argmin(rem))] = True
        drain[live[done]] = t
        live, rem = live[~done], rem[~done]
    return drain


def _solve(net: Network, st: Step, placement: np.ndarray, routing: str, seed: int, itemsize: int,
           alpha_s: float, gamma: float, cap: np.ndarray) -> _Solved:
    routes = route(net, placement[st.src], placement[st.dst], mode=routing, seed=seed)
    nbytes = st.count.astype(np.float64) * itemsize
    net_s = alpha_s + _drain_times(routes, nbytes, cap) + routes.latency_s
    counts = np.diff(routes.flow_ptr)
    used = routes.frac > 0
    m = _Solved(
        st.src.copy(), st.dst.copy(), st.count.copy(), net_s, gamma * nbytes,
        bool(np.unique(st.src).size == st.src.size), bool(np.unique(st.dst).size == st.dst.size),
        routes.link[used], (routes.frac * np.repeat(nbytes, counts))[used],
    )
    p = placement.shape[0]
    if len(st) == p and m.unique_src and m.unique_dst:
        m.permutation = True
        m.src_identity = bool(np.array_equal(st.src, np.arange(p)))
        m.inv_src = np.empty(p, dtype=np.int64)
        m.inv_src[st.src] = np.arange(p)
        m.inv_dst = np.empty(p, dtype=np.int64)
        m.inv_dst[st.dst] = np.arange(p)
    return m


def _matches(m: _Solved, st: Step) -> bool:
    """Is st laid out exactly like the memoised step? Equal pattern keys promise the same
    multiset of (src, dst, count); when every rank sends once, equal senders in the same order
    therefore pin down each transfer, and one comparison is enough."""
    if not np.array_equal(m.src, st.src):
        return False
    return m.unique_src or (np.array_equal(m.dst, st.dst) and np.array_equal(m.count, st.count))


def _run_fast(net: Network, schedule: Schedule, placement: np.ndarray, routing: str, seed: int,
              itemsize: int, alpha_s: float, gamma: float, cap: np.ndarray,
              memoise: bool) -> _Run:
    ready = np.zeros(schedule.p)  # when each rank finished all its transfers so far
    start_s = np.zeros(schedule.nsteps)
    end_s = np.zeros(schedule.nsteps)
    memo: dict[Hashable, _Solved] = {}
    solved_list: list[_Solved] = []
    reused = 0
    for s in range(schedule.nsteps):
        st = schedule.step(s)
        if len(st) == 0:
            start_s[s] = end_s[s] = float(ready.max(initial=0.0))
            continue
        key = schedule.pattern(s) if memoise else None
        m = memo.get(key) if key is not None else None
        if m is not None and _matches(m, st):
            reused += 1
        else:
            m = _solve(net, st, placement, routing, seed, itemsize, alpha_s, gamma, cap)
            solved_list.append(m)
            if key is not None:
                memo[key] = m
        m.uses += 1
        if m.permutation:
            ready, start_s[s], end_s[s] = _permutation_step(ready, m, st, gamma)
        else:
            start_s[s], end_s[s] = _general_step(ready, m, st, gamma)
    link_bytes = np.zeros(cap.shape[0])
    for m in solved_list:
        link_bytes += m.uses * np.bincount(m.link, weights=m.link_bytes, minlength=cap.shape[0])
    time_s = float(end_s.max()) if schedule.nsteps else 0.0
    return time_s, start_s, end_s, link_bytes, len(solved_list), reused, None


def _permutation_step(ready: np.ndarray, m: _Solved, st: Step, gamma: float
                      ) -> tuple[np.ndarray, float, float]:
    """Every rank sends once and receives once: new ready times by gathers, in rank space."""
    assert m.inv_src is not None and m.inv_dst is not None
    at_src = ready if m.src_identity else ready.take(st.src)
    finish = np.maximum(at_src, ready.take(st.dst))
    start = float(finish.min())
    finish += m.net_s
    if gamma > 0 and st.reduce.any():
        finish += m.reduce_s if st.reduce.all() else np.where(st.reduce, m.reduce_s, 0.0)
    by_sender = finish if m.src_identity else finish.take(m.inv_src)
    # finish >= both endpoints' old ready times, so the old ones drop out of the max
    return np.maximum(by_sender, finish.take(m.inv_dst)), start, float(finish.max())


def _general_step(ready: np.ndarray, m: _Solved, st: Step, gamma: float) -> tuple[float, float]:
    """Any step: scatter each transfer's finish time to both endpoints (ready updated in place)."""
    finish = np.maximum(ready[st.src], ready[st.dst])
    start = float(finish.min())
    finish += m.net_s
    if gamma > 0 and st.reduce.any():
        reduce_s = m.reduce_s if st.reduce.all() else np.where(st.reduce, m.reduce_s, 0.0)
        if m.unique_dst:
            finish += reduce_s
        else:
            finish = _serialise_reductions(finish, reduce_s, st)
    if m.unique_src:
        ready[st.src] = finish
    else:
        np.maximum.at(ready, st.src, finish)
    if m.unique_dst:
        ready[st.dst] = np.maximum(ready[st.dst], finish)
    else:
        np.maximum.at(ready, st.dst, finish)
    return start, float(finish.max())


def _serialise_reductions(arrive: np.ndarray, reduce_s: np.ndarray, st: Step) -> np.ndarray:
    """One reduction at a time per receiver, in arrival order (ties: transfer order)."""
    finish = arrive + reduce_s
    free: dict[int, float] = {}
    for i in np.lexsort((np.arange(arrive.shape[0]), arrive)):
        if st.reduce[i]:
            d = int(st.dst[i])
            finish[i] = max(arrive[i], free.get(d, 0.0)) + reduce_s[i]
            free[d] = finish[i]
    return finish

"""The fast engine: step by step, memoised per pattern, and the proof of when it is exact.

Each step's flows share bandwidth among themselves as if they entered together (the within-step
drain times are an event loop of their own), memoised per `schedule.pattern(s)`; start times,
latencies and per-rank dependencies are then propagated exactly with vectorised max-plus
updates. It equals the exact engine whenever no link carries two transfers that can be in flight
at the same time with different start times (`never_overlap` proves it for a whole schedule);
otherwise it ignores how neighbouring steps overlap (5-15 % pessimistic, docs/topology-sim.md).
It is what makes 55,294 ring steps on 27,648 hosts feasible.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np

from distnet.allreduce.schedule import Schedule, Step
from distnet.common.progress import bar
from topology.maxmin import max_min_rates
from topology.network import Network
from topology.routing import Routes, route, sub_routes

# A flow with at most this fraction of its bytes left has drained (float round-off, not data).
# A simulation of at least this many transfers shows a progress bar on a terminal (both engines).
BIG_TRANSFERS = 1_000_000
PROGRESS_EVERY = 1024  # steps between bar updates: the bar costs nothing per step
DRAIN_REL = 1e-9

# time_s, step_start_s, step_end_s, link_bytes, patterns solved, steps reused
FastRun = tuple[float, np.ndarray, np.ndarray, np.ndarray, int, int]



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
        ptr, lk, fr = sub_routes(routes, live)
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
           alpha_s: float, gamma: float, cap: np.ndarray, route_fn=route) -> _Solved:
    routes = route_fn(net, placement[st.src], placement[st.dst], mode=routing, seed=seed)
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


def run_fast(net: Network, schedule: Schedule, placement: np.ndarray, routing: str, seed: int,
              itemsize: int, alpha_s: float, gamma: float, cap: np.ndarray,
              memoise: bool, route_fn=route) -> FastRun:
    ready = np.zeros(schedule.p)  # when each rank finished all its transfers so far
    start_s = np.zeros(schedule.nsteps)
    end_s = np.zeros(schedule.nsteps)
    memo: dict[Hashable, _Solved] = {}
    solved_list: list[_Solved] = []
    reused = 0
    progress = bar(schedule.nsteps, f"simulate {schedule.name} (fast)", unit="step",
                   show=schedule.p * schedule.nsteps >= BIG_TRANSFERS)
    for s in range(schedule.nsteps):
        if s % PROGRESS_EVERY == 0:
            progress.update(min(PROGRESS_EVERY, schedule.nsteps - s))
        st = schedule.step(s)
        if len(st) == 0:
            start_s[s] = end_s[s] = float(ready.max(initial=0.0))
            continue
        key = schedule.pattern(s) if memoise else None
        m = memo.get(key) if key is not None else None
        if m is not None and _matches(m, st):
            reused += 1
        else:
            m = _solve(net, st, placement, routing, seed, itemsize, alpha_s, gamma, cap,
                       route_fn)
            solved_list.append(m)
            if key is not None:
                memo[key] = m
        m.uses += 1
        if m.permutation:
            ready, start_s[s], end_s[s] = _permutation_step(ready, m, st, gamma)
        else:
            start_s[s], end_s[s] = _general_step(ready, m, st, gamma)
    progress.close()
    link_bytes = np.zeros(cap.shape[0])
    for m in solved_list:
        link_bytes += m.uses * np.bincount(m.link, weights=m.link_bytes, minlength=cap.shape[0])
    time_s = float(end_s.max()) if schedule.nsteps else 0.0
    return time_s, start_s, end_s, link_bytes, len(solved_list), reused


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



def never_overlap(net: Network, schedule: Schedule, placement: np.ndarray, routing: str,
                  seed: int, route_fn=route) -> tuple[bool, str]:
    """Prove that no link ever carries two transfers in flight at once with different starts.

    Two transfers that share a rank never overlap when they are in different steps (the rank
    finishes one step before it starts its next), and transfers between the same two ranks in one
    step start together (the fast engine solves those jointly). So it suffices that, per link,
    (a) each step puts at most one distinct (src, dst) pair on it, and (b) all pairs it ever
    carries have a rank in common. Then every flow's rate is what the fast engine computes, and
    so are all times. Returns (proved, reason).
    """
    p = schedule.p
    n_links = net.n_links
    # per link the ranks every pair on it so far has in common; -2 unseen, -1 none left
    common = np.full((n_links, 2), -2, dtype=np.int64)
    seen: set[Hashable] = set()
    seen_arrays: set[tuple[bytes, bytes]] = set()
    for s in range(schedule.nsteps):
        key = schedule.pattern(s)
        if key in seen:
            continue
        seen.add(key)
        st = schedule.step(s)
        moving = (st.count > 0) & (st.src != st.dst)
        src, dst = st.src[moving].astype(np.int64), st.dst[moving].astype(np.int64)
        arrays = (src.tobytes(), dst.tobytes())
        if arrays in seen_arrays or src.size == 0:
            continue
        seen_arrays.add(arrays)
        pair = np.unique(src * p + dst)
        a, b = pair // p, pair % p
        r = route_fn(net, placement[a], placement[b], mode=routing, seed=seed)
        row = np.repeat(np.arange(pair.size), np.diff(r.flow_ptr))
        keep = r.frac > 0
        lk, row = r.link[keep], row[keep]
        if lk.size == 0:  # every pair on one host: nothing on the network
            continue
        order = np.lexsort((row, lk))
        lk, row = lk[order], row[order]
        clash = np.flatnonzero((lk[1:] == lk[:-1]) & (row[1:] != row[:-1]))
        if clash.size:
            i = int(clash[0])
            return False, (f"step {s} puts ranks {a[row[i]]}->{b[row[i]]} and "
                           f"{a[row[i + 1]]}->{b[row[i + 1]]} on one link")
        first = np.r_[True, lk[1:] != lk[:-1]]
        lk, ra, rb = lk[first], a[row[first]], b[row[first]]
        c = common[lk]
        fresh = c[:, 0] == -2
        keep0 = np.where((c[:, 0] == ra) | (c[:, 0] == rb), c[:, 0], -1)
        keep1 = np.where((c[:, 1] == ra) | (c[:, 1] == rb), c[:, 1], -1)
        new = np.where(fresh[:, None], np.stack([ra, rb], axis=1), np.stack([keep0, keep1], 1))
        bad = np.flatnonzero((new[:, 0] < 0) & (new[:, 1] < 0))
        if bad.size:
            return False, (f"ranks {ra[bad[0]]}->{rb[bad[0]]} (step {s}) share a link with "
                           "an earlier step's transfers of other ranks")
        common[lk] = new
    return True, "no link carries two transfers that can be in flight together"

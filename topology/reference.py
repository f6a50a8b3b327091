"""The reference engine: today's exact event loop, kept verbatim as the oracle of the tests.

One global event loop (heap ordered by time, then sequence number) in which flows of every step
compete; max-min rates of *all* active flows are re-solved whenever a flow enters or leaves links
another flow uses. Slow (~0.2 ms per event, ~n^2.8 for a ring), but simple enough to trust:
`topology.exact` must agree with it wherever it runs (tests/unit/test_exact.py).
"""

from __future__ import annotations

import heapq

import numpy as np

from distnet.allreduce.schedule import Schedule, Step
from topology.maxmin import link_load, max_min_rates
from topology.network import Network
from topology.routing import route, sub_routes

# A flow with at most this fraction of its bytes left has drained (float round-off, not data).
DRAIN_REL = 1e-9



_INJECT, _ARRIVE, _DONE = 0, 1, 2


def _cat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


# time_s, step_start_s, step_end_s, link_bytes, patterns solved, steps reused, event log
_Run = tuple[float, np.ndarray, np.ndarray, np.ndarray, int, int,
             list[tuple[float, str, int, int, int]] | None]


def run_reference(net: Network, schedule: Schedule, placement: np.ndarray, routing: str, seed: int,
               itemsize: int, alpha_s: float, gamma: float, cap: np.ndarray,
               want_log: bool, route=route) -> _Run:
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
            ptr, lk, fr = sub_routes(routes, active, n_entries)
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



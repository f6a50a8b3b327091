"""The exact engine's driver: streams a schedule's steps into the event loop of `topology.kernel`.

Steps are materialised in order as ranks reach them and dropped once every rank has moved past
them, so memory follows the steps in flight (a few for a ring), not the 134 M transfers of an
8,192-rank ring. Each distinct (src, dst) pair is routed once (ECMP, D-mod-k and ideal routes
depend only on the pair) and each step pattern's bookkeeping (groups of a rank's transfers in a
step, their members) is computed once per `schedule.pattern(s)` and reused.

A group is (rank, step): rank r may start its transfers of a step once all its transfers of its
previous step (in its own list of steps) are done, exactly as in the MPI executor.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np

from distnet.allreduce.schedule import Schedule
from distnet.common.errors import UserError
from distnet.common.progress import bar
from topology import kernel as K
from topology.fast import BIG_TRANSFERS
from topology.network import Network
from topology.routing import route
from topology.rows import write_step

# transfers materialised per refill (amortises the Python side; ~100 bytes each)
BATCH_TRANSFERS = 1 << 18
# arrival lanes of the event queue: one per distinct path latency, for the first few of them
LATENCY_LANES = 6
DRAIN_REL = 1e-9  # as topology.reference: a flow this close to empty has drained
TIE_REL = 1e-9  # as topology.maxmin


@dataclass
class _Pattern:
    src: np.ndarray
    dst: np.ndarray
    pair: np.ndarray  # pair id of each transfer
    ranks: np.ndarray  # ranks in the step, sorted: local group g is rank ranks[g]
    # local transfer indices of the groups' members past the first G_INLINE (those sit in the
    # group's row), grouped by local group: the member table holds only these (none in a ring)
    spill: np.ndarray
    # the step's rows of the transfer and group tables with local ids: a step adds its offsets
    trows: np.ndarray
    grows: np.ndarray


class _Pairs:
    """Routes of every distinct (src rank, dst rank) pair seen so far, as one growing CSR."""

    def __init__(self, net: Network, placement: np.ndarray, routing: str, seed: int,
                 route_fn=route) -> None:
        self.net, self.placement, self.routing, self.seed = net, placement, routing, seed
        self.route_fn = route_fn
        self.p = int(placement.shape[0])
        self.keys = np.zeros(0, np.int64)  # sorted
        self.ids = np.zeros(0, np.int64)  # pair id of keys[j]
        self.ptr = np.zeros(1, np.int64)
        self.link = np.zeros(0, np.int64)
        self.frac = np.zeros(0)
        self.lat = np.zeros(0)
        self.bytes = np.zeros(0)  # bytes carried by the pair over the run
        self.cls = np.zeros(0, np.int64)  # latency class (arrival lane), -1: the heap
        # 1: a route that crosses one link twice (possible with ideal spreading around failures)
        # never runs as a ghost, which is alone on each of its links
        self.twice = np.zeros(0, np.int64)
        self.classes: dict[float, int] = {}

    @property
    def n(self) -> int:
        return int(self.lat.shape[0])

    @property
    def stride(self) -> int:
        return int(np.diff(self.ptr).max(initial=1))

    def lookup(self, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        key = src * self.p + dst
        pos = np.searchsorted(self.keys, key)
        pos_c = np.minimum(pos, max(self.keys.size - 1, 0))
        known = (self.keys.size > 0) & (self.keys[pos_c] == key) if self.keys.size else \
            np.zeros(key.shape, bool)
        if not known.all():
            new = np.unique(key[~known])
            r = self.route_fn(self.net, self.placement[new // self.p], self.placement[new % self.p],
                      mode=self.routing, seed=self.seed)
            keep = r.frac > 0
            rows = np.repeat(np.arange(new.size), np.diff(r.flow_ptr))
            counts = np.bincount(rows[keep], minlength=new.size)
            first = self.n
            self.ptr = np.concatenate([self.ptr, self.ptr[-1] + np.cumsum(counts)])
            self.link = np.concatenate([self.link, r.link[keep]])
            self.frac = np.concatenate([self.frac, r.frac[keep]])
            if not np.all(np.isfinite(r.latency_s)):
                raise UserError("a route has a non-finite latency (check the link latencies)")
            self.lat = np.concatenate([self.lat, r.latency_s])
            cls = np.full(new.size, -1, np.int64)
            for j, lat in enumerate(r.latency_s.tolist()):
                c = self.classes.get(lat)
                if c is None and len(self.classes) < LATENCY_LANES:
                    c = self.classes[lat] = len(self.classes)
                cls[j] = -1 if c is None else c
            self.cls = np.concatenate([self.cls, cls])
            ent = rows[keep] * self.net.n_links + r.link[keep]
            seen = np.unique(ent)
            twice = np.zeros(new.size, np.int64)
            if seen.size < ent.size:
                twice = (np.bincount(rows[keep], minlength=new.size)
                         > np.bincount(seen // self.net.n_links, minlength=new.size)).astype(
                             np.int64)
            self.twice = np.concatenate([self.twice, twice])
            self.bytes = np.concatenate([self.bytes, np.zeros(new.size)])
            keys = np.concatenate([self.keys, new])
            ids = np.concatenate([self.ids, first + np.arange(new.size)])
            order = np.argsort(keys, kind="stable")
            self.keys, self.ids = keys[order], ids[order]
            pos = np.searchsorted(self.keys, key)
        return self.ids[pos]

    def link_bytes(self, n_links: int) -> np.ndarray:
        per_entry = np.repeat(self.bytes, np.diff(self.ptr)) * self.frac
        return np.bincount(self.link, weights=per_entry, minlength=n_links)


def _pattern(pairs: _Pairs, src: np.ndarray, dst: np.ndarray) -> _Pattern:
    ranks = np.unique(np.concatenate([src, dst]))
    gs = np.searchsorted(ranks, src)
    gd = np.searchsorted(ranks, dst)
    m = src.shape[0]
    other = np.flatnonzero(src != dst)  # a transfer to oneself belongs to one group
    owner = np.concatenate([gs, gd[other]])
    tid = np.concatenate([np.arange(m), other])
    order = np.argsort(owner, kind="stable")
    members = tid[order]
    mcount = np.bincount(owner, minlength=ranks.size)
    first = np.cumsum(mcount) - mcount
    inline = np.zeros((ranks.size, K.G_INLINE), np.int64)
    for q in range(K.G_INLINE):
        has = mcount > q
        inline[has, q] = members[first[has] + q]
    spilt = np.maximum(mcount - K.G_INLINE, 0)
    spill = members[np.arange(members.size) - np.repeat(first, mcount) >= K.G_INLINE]
    pair = pairs.lookup(src, dst)
    trows = np.zeros((m, K.T_COLS), np.int64)
    trows[:, K.T_SRC], trows[:, K.T_DST], trows[:, K.T_PAIR] = src, dst, pair
    trows[:, K.T_GS], trows[:, K.T_GD], trows[:, K.T_SLOT] = gs, gd, -1
    grows = np.zeros((ranks.size, K.G_COLS), np.int64)
    grows[:, K.G_RANK], grows[:, K.G_LEFT], grows[:, K.G_NEXT] = ranks, mcount, -1
    # member q >= G_INLINE of a group is m_tid[G_MPTR + q]: the pointer is G_INLINE before the
    # group's first spilt member
    grows[:, K.G_MPTR] = np.cumsum(spilt) - spilt - K.G_INLINE
    grows[:, K.G_MLEN] = mcount
    grows[:, K.G_M0:] = inline
    return _Pattern(src, dst, pair, ranks, spill, trows, grows)


def _aligned(shape: tuple[int, ...], dtype, fill=0) -> np.ndarray:
    """A new array whose data starts on a cache line: malloc's 16-byte alignment would put every
    64-byte row of a table across two lines (two misses instead of one)."""
    n = int(np.prod(shape)) * np.dtype(dtype).itemsize
    raw = np.empty(n + 64, np.uint8)
    off = -raw.ctypes.data % 64
    a = raw[off:off + n].view(dtype).reshape(shape)
    a[...] = fill
    return a


class _Grow:
    """An array with spare capacity at the end, cut from the front when old entries die; with
    `cols`, a table of rows (the kernel reads a transfer's or a group's fields from one row, one
    cache line, rather than from up to ten arrays)."""

    def __init__(self, dtype, fill=0, cols: int = 0) -> None:
        self.a = _aligned((1024, cols) if cols else (1024,), dtype, fill)
        self.n = 0
        self.fill = fill

    def extend(self, m: int) -> np.ndarray:
        """The next m entries, for the caller to fill in place."""
        need = self.n + m
        if need > self.a.shape[0]:
            bigger = _aligned((max(need, 2 * self.a.shape[0]), *self.a.shape[1:]),
                              self.a.dtype, self.fill)
            bigger[:self.n] = self.a[:self.n]
            self.a = bigger
        self.n = need
        return self.a[need - m:need]

    def append(self, x: np.ndarray) -> None:
        self.extend(x.shape[0])[...] = x

    def cut(self, k: int) -> None:
        # one pass: NumPy buffers the move only if the two ranges overlap (they do not once the
        # dead front is as long as the live part), and rows past n are written before they are
        # read (extend's contract), so the freed tail is not cleared
        if k > 0:
            self.a[:self.n - k] = self.a[k:self.n]
            self.n -= k


@dataclass
class ExactRun:
    time_s: float
    step_start_s: np.ndarray
    step_end_s: np.ndarray
    link_bytes: np.ndarray
    transfers: int
    events: int
    solves: int
    work: int  # links visited by the max-min rounds: the solver's share of the cost
    log: list[tuple[float, str, int, int, int]] | None
    links: int = 0  # component links summed over solves
    ghosts: int = 0  # flows alone at injection whose drain was computed there (kernel.py)
    revived: int = 0  # ghosts joined by another flow before their drain


_KINDS = ("start", "drain", "done")


def run_exact(net: Network, schedule: Schedule, placement: np.ndarray, routing: str, seed: int,
              itemsize: int, alpha_s: float, gamma: float, cap: np.ndarray, want_log: bool,
              log_capacity: int = 0, route_fn=route) -> ExactRun:
    p = schedule.p
    pairs = _Pairs(net, placement, routing, seed, route_fn)
    n_links = int(cap.shape[0])
    I = np.zeros(K.I_N, np.int64)
    F = np.zeros(K.F_N)
    F[K.F_ALPHA], F[K.F_GAMMA], F[K.F_DRAIN_REL], F[K.F_TIE_REL] = alpha_s, gamma, DRAIN_REL, \
        TIE_REL
    I[K.I_LOG] = int(want_log)
    # transfers (global id - tbase), groups (global id - gbase), members (global - mbase); the
    # first ids of each step stay on this side (compaction, the log): the kernel reads its group's
    # Rows of 32-bit ids (two rows to a cache line) unless a run's global ids could outgrow them
    # (a group has up to 2 members per transfer): the first read of a rank's next group and its
    # transfers is the loop's costliest memory access.
    idt = np.int32 if 2 * p * schedule.nsteps < 2**31 else np.int64
    T = _Grow(idt, 0, K.T_COLS)
    t_bytes = _Grow(np.float64)
    step_first = np.zeros((schedule.nsteps + 1, 3), np.int64)  # first (transfer, group, member)
    G = _Grow(idt, 0, K.G_COLS)
    M = _Grow(np.int64)
    r_cur = np.full(p, -3, np.int64)  # -3: no group seen yet
    r_last = np.full(p, -1, np.int64)
    r_wait = np.zeros(p, np.int64)
    pend = np.zeros(p, np.int64)
    compute_free = np.zeros(p)
    s_start = np.full(schedule.nsteps, np.inf)
    s_end = np.zeros(schedule.nsteps)
    memo: dict[Hashable, _Pattern] = {}
    state = {"hi": 0, "tid": 0, "gid": 0, "mid": 0}
    n_transfers = 0

    def load(min_transfers: int) -> None:
        nonlocal n_transfers
        got = 0
        while state["hi"] < schedule.nsteps and got < min_transfers:
            s = state["hi"]
            st = schedule.step(s)
            state["hi"] += 1
            step_first[s] = state["tid"], state["gid"], state["mid"]
            m = len(st)
            if m == 0:
                continue
            if idt is np.int32 and 2 * (state["tid"] + m) >= 2**31:
                raise UserError(f"{schedule.name}: more than 2**30 transfers are too many for the "
                                "exact engine")
            key = schedule.pattern(s)
            pat = memo.get(key)
            if pat is None or not (np.array_equal(pat.src, st.src)
                                   and np.array_equal(pat.dst, st.dst)):
                pat = _pattern(pairs, st.src.astype(np.int64), st.dst.astype(np.int64))
                memo[key] = pat
            ng, nm = pat.ranks.shape[0], pat.spill.shape[0]
            tn, gn, mn = T.n, G.n, M.n
            for table, rows in ((T, m), (t_bytes, m), (G, ng), (M, nm)):
                table.extend(rows)
            if not write_step(T.a, tn, pat.trows, st.reduce, G.a, gn, pat.grows, M.a, mn,
                              pat.spill, t_bytes.a, st.count, itemsize, pat.pair,
                              pairs.bytes, s, state["tid"], state["gid"], state["mid"],
                              I[K.I_GBASE], pat.ranks, r_last, r_cur):
                raise UserError(f"{schedule.name}: step {s} has a negative element count")
            state["tid"] += m
            state["gid"] += ng
            state["mid"] += nm
            got += m
            n_transfers += m
        step_first[state["hi"]] = state["tid"], state["gid"], state["mid"]
        I[K.I_ALL_LOADED] = int(state["hi"] >= schedule.nsteps)

    def compact() -> None:
        if want_log:
            return  # the log names transfers by id: keep them all (small runs only)
        live = r_cur >= 0
        steps = []
        if live.any():
            steps.append(G.a[r_cur[live] - I[K.I_GBASE], K.G_STEP].min())
        waiting = r_cur == K.WAITING_RANK
        if waiting.any():
            steps.append(G.a[r_wait[waiting] - I[K.I_GBASE], K.G_STEP].min())
        lo = min(steps) if steps else state["hi"]
        kt, kg, km = (int(x) for x in step_first[lo] - I[[K.I_TBASE, K.I_GBASE, K.I_MBASE]])
        if 2 * kt < T.n:
            return  # cut when the dead front is at least the live part: each row moves O(1) times
        for arr, k in ((T, kt), (t_bytes, kt), (G, kg), (M, km)):
            arr.cut(k)
        I[K.I_TBASE] += kt
        I[K.I_GBASE] += kg
        I[K.I_MBASE] += km

    load(BATCH_TRANSFERS)
    while (r_cur == -3).any() and not I[K.I_ALL_LOADED]:
        load(BATCH_TRANSFERS)
    r_cur[r_cur == -3] = K.FINISHED_RANK
    starters = np.flatnonzero(r_cur >= 0)
    pend[:starters.size] = starters
    I[K.I_PEND_N] = starters.size
    F[K.F_PEND_T] = 0.0

    # active flows, grown on demand
    slots = 0
    S = pairs.stride
    A: dict[str, np.ndarray] = {}
    E: dict[str, np.ndarray] = {}

    def grow_slots(new: int) -> None:
        nonlocal slots
        old = slots
        rows = _aligned((new, K.A_COLS), np.float64)
        rows.view(np.int64)[:, K.AI_POS] = -1
        if old:
            rows[:old] = A["rows"][:old]
        A["rows"], A["irows"] = rows, rows.view(np.int64)
        for k in ("mark", "free", "dheap", "comp"):
            a = np.zeros(new, np.int64)
            if old:
                a[:old] = A[k][:old]
            A[k] = a
        for k, dt, fill in (("link", np.int64, 0), ("frac", np.float64, 0.0),
                            ("next", np.int64, -1), ("prev", np.int64, -1),
                            ("seeds", np.int64, 0)):
            a = np.full(new * S, fill, dtype=dt)
            if old:
                a[:old * S] = E[k][:old * S]
            E[k] = a
        # the new slots go on the free stack (the lowest on top, for a deterministic order)
        nf = int(I[K.I_NFREE])
        A["free"][nf:nf + new - old] = np.arange(new - 1, old - 1, -1)
        I[K.I_NFREE] = nf + new - old
        slots = new

    def restride(new_s: int) -> None:
        nonlocal S
        for k in ("link", "frac", "next", "prev", "seeds"):
            a = np.full(slots * new_s, 0 if k in ("link", "frac", "seeds") else -1,
                        dtype=E[k].dtype)
            a.reshape(slots, new_s)[:, :S] = E[k].reshape(slots, S)
            E[k] = a
        for k in ("next", "prev"):
            x = E[k]
            on = x >= 0
            x[on] = (x[on] // S) * new_s + x[on] % S
        head = Li[:, K.LI_HEAD]
        on = head >= 0
        head[on] = (head[on] // S) * new_s + head[on] % S
        S = new_s

    L = _aligned((n_links, K.L_COLS), np.float64)
    Li = L.view(np.int64)
    Li[:, K.LI_HEAD] = -1
    L[:, K.LF_CAP] = cap
    L[:, K.LF_GEND] = -1.0  # drain time of the link's ghost (kernel.py); none: -1
    comp_links = np.zeros(n_links, np.int64)
    grow_slots(min(4096, max(16, n_transfers)))
    n_lanes = K.LANE_ARRIVE + LATENCY_LANES
    Q = np.zeros(3 + 2 * n_lanes, np.int64)
    Q[1] = n_lanes
    H: dict[str, np.ndarray] = {}

    def fit_queue() -> None:
        """Heap and lanes hold at most one event per live transfer: size them to the table."""
        cap = int(Q[0])
        need = 1 << int(T.a.shape[0] - 1).bit_length()
        if need <= cap:
            return
        n = int(I[K.I_HN])
        for k, dt in (("t", np.float64), ("q", np.int64), ("k", np.int8), ("i", np.int64)):
            a = np.zeros(need * (n_lanes + 1), dtype=dt)
            if cap:
                a[:n] = H[k][:n]
                for lane in range(n_lanes):
                    head, tail = int(Q[2 + lane]), int(Q[2 + n_lanes + lane])
                    idx = cap * (lane + 1) + np.arange(head, tail) % cap
                    a[need * (lane + 1):need * (lane + 1) + tail - head] = H[k][idx]
            H[k] = a
        for lane in range(n_lanes):
            size = Q[2 + n_lanes + lane] - Q[2 + lane]
            Q[2 + lane], Q[2 + n_lanes + lane] = 0, size
        Q[0] = need

    cand = np.zeros(1, np.int64)
    moved = np.zeros(2, np.int64)  # the kernel allocates nothing: its scratch comes from here
    lg_n = max(1, log_capacity) if want_log else 1
    lg_t, lg_k, lg_i = np.zeros(lg_n), np.zeros(lg_n, np.int8), np.zeros(lg_n, np.int64)
    I[K.I_STRIDE] = S
    # Steps loaded run a batch ahead of the simulated ones: close enough for a progress bar.
    progress = bar(schedule.nsteps, f"simulate {schedule.name} (exact)", unit="step",
                   show=p * schedule.nsteps >= BIG_TRANSFERS)
    shown = 0
    while True:
        progress.update(state["hi"] - shown)
        shown = state["hi"]
        fit_queue()
        if S < pairs.stride:
            restride(pairs.stride)
            I[K.I_STRIDE] = S
        # lanes in use: the kernel scans only these (latency classes appear as pairs are routed)
        Q[2 + 2 * n_lanes] = K.LANE_ARRIVE + len(pairs.classes)
        need_cand = max(T.a.shape[0], slots)
        if cand.shape[0] < need_cand:
            cand = np.zeros(need_cand, np.int64)
        status = K.run(
            I, F, Q, T.a, t_bytes.a, G.a, M.a, r_cur, r_wait, pend, cand, compute_free, pairs.ptr,
            pairs.link, pairs.frac, pairs.lat, pairs.cls, H["t"], H["q"], H["k"], H["i"],
            A["dheap"], A["rows"], A["irows"], A["mark"], A["free"], E["link"], E["frac"],
            E["next"], E["prev"], L, Li, A["comp"], comp_links, E["seeds"], moved, s_start, s_end,
            lg_t, lg_k, lg_i, pairs.twice)
        if status == K.FINISHED:
            progress.update(schedule.nsteps - shown)
            progress.close()
            break
        if status == K.NEED_SLOTS:
            grow_slots(2 * slots)
            continue
        compact()
        waiting = pend[:int(I[K.I_PEND_N])]
        waiting = waiting[r_cur[waiting] == K.WAITING_RANK]
        load(BATCH_TRANSFERS)
        while not I[K.I_ALL_LOADED] and np.any(
                G.a[r_wait[waiting] - I[K.I_GBASE], K.G_NEXT] < 0):
            load(BATCH_TRANSFERS)
    if np.any(T.a[:T.n, K.T_STATE] != K.COMPLETE):
        raise UserError(f"{schedule.name}: the schedule deadlocks (a transfer's two ranks never "
                        "reach its step together)")
    if not np.all(np.isfinite(s_end)):
        raise UserError("the simulation produced a non-finite time (check rates and sizes)")
    s_start[~np.isfinite(s_start)] = 0.0
    time_s = float(s_end.max()) if schedule.nsteps else 0.0
    log = None
    if want_log:
        n = int(I[K.I_LOG_N])
        tid = lg_i[:n]
        log = [(float(t), _KINDS[int(k)], int(s), int(a), int(b)) for t, k, s, a, b in zip(
            lg_t[:n], lg_k[:n], np.searchsorted(step_first[:state["hi"], 0], tid, "right") - 1,
            T.a[tid, K.T_SRC], T.a[tid, K.T_DST],
            strict=True)]
    return ExactRun(time_s, s_start, s_end, pairs.link_bytes(n_links), n_transfers,
                    int(I[K.I_EVENTS]), int(I[K.I_SOLVES]), int(I[K.I_WORK]), log,
                    int(I[K.I_LINKS]), int(I[K.I_GHOSTS]), int(I[K.I_REVIVED]))

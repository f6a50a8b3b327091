"""The exact engine's event loop: one global clock, max-min rates re-solved per connected component.

Same model as `topology.reference` (the oracle the tests compare against), organised for scale:
- flows live in arrays (structure of arrays), each active flow in a slot with its route entries
  threaded onto per-link lists, so the flows sharing a link are found without scanning;
- a flow entering or leaving re-solves max-min only on the connected component of links and
  flows it touches (max-min fairness separates over link-disjoint groups), and not at all when it
  is alone on its links (then its rate is its narrowest link's);
- drains sit in an indexed heap keyed by each flow's projected drain time, so a rate change moves
  one entry instead of scanning every active flow; starts, arrivals and completions are a second
  heap ordered by (time, sequence number), as in the reference;
- fewer events per transfer (about 2.6 instead of 3.6 for a congested ring): a flow alone on its
  links when it enters is a *ghost* whose drain is known at once (see the ghost section), and a
  completion that would be the very next event anyway is done in place instead of queued;
- the loop mostly waits on memory (rows last touched long before), so every record is one
  cache-line-aligned row: a transfer (T) and a (rank, step) group (G, its first members inline)
  32 bytes, an active flow (A) and a link (L) 64 bytes; and the rows the next events will read are
  prefetched from the lanes (see the prefetching section).
The loop is resumable: it returns to its Python driver (`topology.exact`) when a rank needs steps
that are not loaded yet or when a table is full, and carries on where it stopped. With Numba it
is compiled; without, the very same functions run as plain Python (slow, but the same answers).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

try:  # the accelerator is optional: the same code runs uncompiled without it
    if os.environ.get("DISTNET_NO_NUMBA"):
        raise ImportError("DISTNET_NO_NUMBA is set")
    from llvmlite import ir
    from numba import njit, types
    from numba.core import cgutils
    from numba.extending import intrinsic

    COMPILED = True

    @intrinsic
    def _prefetch(typingctx, addr):
        """Ask the CPU to start loading the cache line at `addr` (LLVM's prefetch, for reading,
        locality 2: into L2, not L1, which the dozens of lines requested per event would crowd
        out); nothing waits for it and a bad address is harmless."""
        def codegen(context, builder, signature, args):
            i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
            fn = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
                "llvm.prefetch.p0")
            builder.call(fn, [builder.inttoptr(args[0], i8p), ir.Constant(i32, 0),
                              ir.Constant(i32, 2), ir.Constant(i32, 1)])
            return context.get_dummy_value()

        return types.void(types.intp), codegen
except ImportError:  # tests run the same functions uncompiled this way, as the reference
    COMPILED = False

    def njit(*args, **kwargs):  # type: ignore[no-redef]
        def wrap(fn):
            return fn

        return wrap(args[0]) if args and callable(args[0]) else wrap

    def _prefetch(addr):  # type: ignore[misc]
        pass


# Compiled without Numba's reference counting: every array passed between these functions would
# otherwise cost an atomic increment and decrement per call (measured 2.4x on the heap), so
# nothing in the loop may allocate.
_JIT: dict[str, Any] = {"cache": True, "_nrt": False}
# The small helpers of every event are inlined at Numba's level: a call passes each array as
# seven machine words on the stack, which cost more than the helper's own work.
_HOT: dict[str, Any] = {**_JIT, "inline": "always"}

# return codes of run()
FINISHED, NEED_STEPS, NEED_SLOTS = 0, 1, 2
# event kinds; the log writes them as "start", "drain", "done"
INJECT, ARRIVE, DONE = 0, 1, 2
LOG_START, LOG_DRAIN, LOG_DONE = 0, 1, 2
# transfer states
WAITING, STARTED, ACTIVE, DRAINED, ARRIVED, COMPLETE, GHOST = 0, 1, 2, 3, 4, 5, 6
# or-ed onto a state: the ARRIVE event queued for this transfer as a ghost is void (it was revived)
STALE = 8
# AI_POS of a ghost slot (not in the drain heap; -1 is a flow not in it yet)
GHOST_POS = -2
# rank states in r_cur besides a group id
FINISHED_RANK, WAITING_RANK = -1, -2

# columns of the transfer table T (one row per loaded transfer: one cache line) and of the group
# table G (one row per (rank, step) group, its first G_INLINE members inline)
T_SRC, T_DST, T_PAIR, T_GS, T_GD, T_SLOT, T_STATE, T_RED, T_COLS = range(9)
G_RANK, G_LEFT, G_NEXT, G_MPTR, G_MLEN, G_STEP, G_M0, G_M1, G_COLS = range(9)
G_INLINE = G_COLS - G_M0
# Columns of the slot table (one row per active flow, 64 bytes: a flow's fields are one cache line
# instead of eight) and of the link table (one row per link). Each table is float64 with an int64
# view of the same memory (A/Ai, L/Li): AF_/LF_ columns are read through the first, AI_/LI_ ones
# through the second, never a column through both.
AI_TID, AI_INJ, AI_POS, AI_N, AF_REM, AF_RATE, AF_LAST, AF_END, A_COLS = range(9)
LI_HEAD, LF_CAP, LF_GEND, LI_GSLOT, LI_MARK, LF_RES, LF_W, LI_CNT, L_COLS = range(9)

# indices into the integer scalar array `I`
(I_TBASE, I_GBASE, I_MBASE, I_SEQ, I_HN, I_DN, I_NFREE, I_STRIDE, I_ALL_LOADED, I_PEND_N,
 I_STALLS, I_EPOCH, I_LOG, I_LOG_N, I_SOLVES, I_EVENTS, I_WORK, I_LINKS, I_INJ, I_GHOSTS,
 I_REVIVED, I_N) = range(22)
# indices into the float scalar array `F`
F_ALPHA, F_GAMMA, F_DRAIN_REL, F_TIE_REL, F_PEND_T, F_NOW, F_N = range(7)


# ---- event heap: (time, seq) min-heap of (kind, transfer id) -----------------------------------
@njit(**_HOT)
def _less(h_t, h_q, a, b):
    return h_t[a] < h_t[b] or (h_t[a] == h_t[b] and h_q[a] < h_q[b])


@njit(**_HOT)
def _swap(h_t, h_q, h_k, h_i, a, b):
    h_t[a], h_t[b] = h_t[b], h_t[a]
    h_q[a], h_q[b] = h_q[b], h_q[a]
    h_k[a], h_k[b] = h_k[b], h_k[a]
    h_i[a], h_i[b] = h_i[b], h_i[a]


@njit(**_JIT)
def _hpush(I, h_t, h_q, h_k, h_i, t, kind, tid):
    n = I[I_HN]
    h_t[n], h_q[n], h_k[n], h_i[n] = t, I[I_SEQ], kind, tid
    I[I_SEQ] += 1
    I[I_HN] = n + 1
    while n > 0:
        parent = (n - 1) >> 1
        if _less(h_t, h_q, n, parent):
            _swap(h_t, h_q, h_k, h_i, n, parent)
            n = parent
        else:
            break


@njit(**_JIT)
def _hpop(I, h_t, h_q, h_k, h_i):
    n = I[I_HN] - 1
    I[I_HN] = n
    _swap(h_t, h_q, h_k, h_i, 0, n)
    i = 0
    while True:
        a, b, m = 2 * i + 1, 2 * i + 2, i
        if a < n and _less(h_t, h_q, a, m):
            m = a
        if b < n and _less(h_t, h_q, b, m):
            m = b
        if m == i:
            break
        _swap(h_t, h_q, h_k, h_i, i, m)
        i = m


# ---- lanes: FIFO queues beside the heap -------------------------------------------------------
# Events of one kind are mostly pushed in time order (injections at now + alpha, arrivals at
# now + the path latency of one latency class, completions at now): such a push appends to
# that kind's lane in O(1); only an out-of-order one goes to the heap. Each lane and the heap are
# sorted by (time, seq), so taking the least head of all of them is exactly the heap order.
# Lane j lives at h_*[CAP*(j+1) : CAP*(j+2)] as a ring; Q = [CAP, NL, heads..., tails..., USED].
# CAP is a power of two, so a position in a ring is a mask, not a division. Only the first USED
# lanes are scanned for the least head: arrival lanes open one per latency class as routes are
# seen (a random ring on a fat-tree has three classes, not the six lanes reserved for them).
LANE_INJECT, LANE_DONE, LANE_REDUCED, LANE_ARRIVE = 0, 1, 2, 3


@njit(**_HOT)
def _push(I, Q, h_t, h_q, h_k, h_i, t, kind, tid, lane):
    if lane >= 0:
        cap, nl = Q[0], Q[1]
        head, tail = Q[2 + lane], Q[2 + nl + lane]
        base = cap * (lane + 1)
        if tail == head or h_t[base + ((tail - 1) & (cap - 1))] <= t:
            j = base + (tail & (cap - 1))
            h_t[j], h_q[j], h_k[j], h_i[j] = t, I[I_SEQ], kind, tid
            I[I_SEQ] += 1
            Q[2 + nl + lane] = tail + 1
            return
    _hpush(I, h_t, h_q, h_k, h_i, t, kind, tid)


@njit(**_HOT)
def _front(I, Q, h_t, h_q):
    """Position in h_* of the least (time, seq) event, -1 when there is none."""
    cap, nl = Q[0], Q[1]
    best = 0 if I[I_HN] > 0 else -1
    for lane in range(Q[2 + 2 * nl]):
        head = Q[2 + lane]
        if head != Q[2 + nl + lane]:
            j = cap * (lane + 1) + (head & (cap - 1))
            if best < 0 or h_t[j] < h_t[best] or (h_t[j] == h_t[best] and h_q[j] < h_q[best]):
                best = j
    return best


@njit(**_HOT)
def _take(I, Q, h_t, h_q, h_k, h_i, pos):
    """Remove the event at `pos`; returns the lane it was taken from (-1: the heap)."""
    if pos == 0:
        _hpop(I, h_t, h_q, h_k, h_i)
        return -1
    lane = pos // Q[0] - 1
    Q[2 + lane] += 1
    return lane


# ---- prefetching: the loop mostly waits on memory ------------------------------------------
# Each event first reads rows that were last touched long before (a transfer's row when it
# arrives, its groups when it completes, the next group of a rank and that group's transfers,
# the links of a flow entering): one cache miss after another. The lanes say which events come
# soon, so when an event is taken from a lane, the rows that the events a few places behind that
# lane's head will need are requested, in stages that follow the chain (transfer -> its groups
# and ranks -> their next groups -> those groups' transfers; an injection: transfer and bytes ->
# its pair's fields -> its route entries -> its links): by the time an event is taken its rows
# are on their way or there. Even the per-pair and per-rank arrays (tens of KiB) miss: the table
# rows streaming through evict them. Only the lane just taken from moved, so only its positions
# are new (requesting every lane's before each event repeated the same requests). A prefetch
# changes no value, so the answers cannot depend on it.
PF_T, PF_G, PF_NEXT, PF_M = 12, 8, 5, 2  # lane positions behind the head of each stage
PF_LANE = 16  # and of the lane's own entries (two lines of eight)


@njit(**_HOT)
def _pf(a, i):
    _prefetch(a.ctypes.data + i * a.strides[0])


@njit(**_HOT)
def _ahead(I, Q, h_t, h_q, h_i, T, G, t_bytes, compute_free, r_cur, p_ptr, p_link, p_frac,
           p_lat, p_cls, p_twice, L, lane):
    cap, nl = Q[0], Q[1]
    tb, gb = I[I_TBASE], I[I_GBASE]
    head = Q[2 + lane]
    n = Q[2 + nl + lane] - head
    if n <= PF_M:
        return
    base = cap * (lane + 1)
    # the lane's own entries, a few lines ahead of the stages that read them
    _pf(h_i, base + ((head + PF_T + PF_LANE) & (cap - 1)))
    _pf(h_t, base + ((head + PF_LANE) & (cap - 1)))
    _pf(h_q, base + ((head + PF_LANE) & (cap - 1)))
    if lane == LANE_INJECT:
        # an injection reads its bytes and its route (pair -> route entries -> links)
        if n > PF_T:
            k = h_i[base + ((head + PF_T) & (cap - 1))] - tb
            _pf(T, k)
            _pf(t_bytes, k)
        if n > PF_G:
            pr = T[h_i[base + ((head + PF_G) & (cap - 1))] - tb, T_PAIR]
            _pf(p_ptr, pr)
            _pf(p_twice, pr)
            _pf(p_lat, pr)
            _pf(p_cls, pr)
        if n > PF_NEXT:
            pr = T[h_i[base + ((head + PF_NEXT) & (cap - 1))] - tb, T_PAIR]
            _pf(p_link, p_ptr[pr])
            _pf(p_link, p_ptr[pr + 1] - 1)
            _pf(p_frac, p_ptr[pr])
            _pf(p_frac, p_ptr[pr + 1] - 1)
        pr = T[h_i[base + ((head + PF_M) & (cap - 1))] - tb, T_PAIR]
        for j in range(p_ptr[pr], p_ptr[pr + 1]):
            _pf(L, p_link[j])
        return
    if n > PF_T:
        _pf(T, h_i[base + ((head + PF_T) & (cap - 1))] - tb)
    if n > PF_G:
        k = h_i[base + ((head + PF_G) & (cap - 1))] - tb
        _pf(G, T[k, T_GS] - gb)
        _pf(G, T[k, T_GD] - gb)
        _pf(compute_free, T[k, T_DST])
        # a completion moves its ranks on and starts what their neighbours are ready for: the
        # ranks of a transfer and (in a ring) their neighbours share a line of r_cur
        _pf(r_cur, T[k, T_SRC])
        _pf(r_cur, T[k, T_DST])
    if n > PF_NEXT:
        k = h_i[base + ((head + PF_NEXT) & (cap - 1))] - tb
        for g in (T[k, T_GS] - gb, T[k, T_GD] - gb):
            nxt = G[g, G_NEXT]
            if nxt >= 0:
                _pf(G, nxt - gb)
    k = h_i[base + ((head + PF_M) & (cap - 1))] - tb
    for g in (T[k, T_GS] - gb, T[k, T_GD] - gb):
        nxt = G[g, G_NEXT]
        if nxt >= 0:
            for q in range(min(G[nxt - gb, G_MLEN], G_INLINE)):
                _pf(T, G[nxt - gb, G_M0 + q] - tb)


# ---- drain heap: active slots by projected drain time (ties: transfer id), indexed -------------
@njit(**_HOT)
def _dless(A, Ai, x, y):
    """Earlier projected drain first; ties in injection order (AI_INJ)."""
    return A[x, AF_END] < A[y, AF_END] or (
        A[x, AF_END] == A[y, AF_END] and Ai[x, AI_INJ] < Ai[y, AI_INJ])


@njit(**_JIT)
def _dmove(d_heap, A, Ai, i, n):
    """Restore the heap property around position i (up, then down)."""
    while i > 0:
        parent = (i - 1) >> 1
        if _dless(A, Ai, d_heap[i], d_heap[parent]):
            x, y = d_heap[i], d_heap[parent]
            d_heap[i], d_heap[parent] = y, x
            Ai[y, AI_POS], Ai[x, AI_POS] = i, parent
            i = parent
        else:
            break
    while True:
        a, b, m = 2 * i + 1, 2 * i + 2, i
        if a < n and _dless(A, Ai, d_heap[a], d_heap[m]):
            m = a
        if b < n and _dless(A, Ai, d_heap[b], d_heap[m]):
            m = b
        if m == i:
            break
        x, y = d_heap[i], d_heap[m]
        d_heap[i], d_heap[m] = y, x
        Ai[y, AI_POS], Ai[x, AI_POS] = i, m
        i = m


@njit(**_JIT)
def _dinsert(I, d_heap, A, Ai, slot):
    n = I[I_DN]
    d_heap[n] = slot
    Ai[slot, AI_POS] = n
    I[I_DN] = n + 1
    _dmove(d_heap, A, Ai, n, n + 1)


@njit(**_JIT)
def _dremove(I, d_heap, A, Ai, slot):
    i = Ai[slot, AI_POS]
    n = I[I_DN] - 1
    I[I_DN] = n
    if i != n:
        last = d_heap[n]
        d_heap[i] = last
        Ai[last, AI_POS] = i
        _dmove(d_heap, A, Ai, i, n)
    Ai[slot, AI_POS] = -1


# ---- max-min on one connected component -------------------------------------------------------
@njit(cache=True, inline="always")
def _solve_component(I, F, now, seeds, n_seeds, S, A, Ai, a_mark, e_link, e_frac, e_next, L, Li,
                     comp, comp_links, d_heap, T):
    """Progressive filling (as `topology.maxmin`, same tie rule) on the flows reachable from the
    seed slots through shared links; flows whose rate changes get a new projected drain time."""
    I[I_EPOCH] += 1
    I[I_SOLVES] += 1
    ep = I[I_EPOCH]
    nc, nl = 0, 0
    for j in range(n_seeds):
        s = seeds[j]
        if a_mark[s] != ep:
            a_mark[s] = ep
            comp[nc] = s
            nc += 1
    k = 0
    while k < nc:
        s = comp[k]
        k += 1
        for j in range(Ai[s, AI_N]):
            lk = e_link[s * S + j]
            if Li[lk, LI_MARK] != ep:
                Li[lk, LI_MARK] = ep
                comp_links[nl] = lk
                nl += 1
                L[lk, LF_RES] = L[lk, LF_CAP]
                L[lk, LF_W] = 0.0
                Li[lk, LI_CNT] = 0
                e = Li[lk, LI_HEAD]
                while e >= 0:
                    s2 = e // S
                    if a_mark[s2] != ep:
                        a_mark[s2] = ep
                        comp[nc] = s2
                        nc += 1
                    e = e_next[e]
    I[I_LINKS] += nl
    for k in range(nc):
        s = comp[k]
        for j in range(Ai[s, AI_N]):
            lk = e_link[s * S + j]
            L[lk, LF_W] += e_frac[s * S + j]
            Li[lk, LI_CNT] += 1
    # a_mark == ep: still rising; -ep: frozen in this solve
    level = 0.0
    left = nc
    tie = F[F_TIE_REL]
    while left > 0:
        step = np.inf
        for q in range(nl):
            lk = comp_links[q]
            if Li[lk, LI_CNT] > 0:
                share = L[lk, LF_RES] / L[lk, LF_W]
                if share < step:
                    step = share
        level += step
        I[I_WORK] += nl
        limit = step * (1.0 + tie)
        for q in range(nl):
            lk = comp_links[q]
            if Li[lk, LI_CNT] > 0:
                share = L[lk, LF_RES] / L[lk, LF_W]
                L[lk, LF_RES] -= L[lk, LF_W] * step
                if share <= limit:
                    L[lk, LF_RES] = 0.0
                    Li[lk, LI_CNT] = -Li[lk, LI_CNT]  # saturated: freeze its flows after the sweep
        for q in range(nl):
            lk = comp_links[q]
            if Li[lk, LI_CNT] < 0:
                Li[lk, LI_CNT] = 0
                e = Li[lk, LI_HEAD]
                while e >= 0:
                    s = e // S
                    if a_mark[s] == ep:
                        a_mark[s] = -ep
                        left -= 1
                        _set_rate(I, now, s, level, A, Ai, d_heap)
                        for j in range(Ai[s, AI_N]):
                            lk2 = e_link[s * S + j]
                            if Li[lk2, LI_CNT] > 0:
                                L[lk2, LF_W] -= e_frac[s * S + j]
                                Li[lk2, LI_CNT] -= 1
                    e = e_next[e]
        # links whose flows have all frozen take no further part: drop them from the scan
        m = 0
        for q in range(nl):
            lk = comp_links[q]
            if Li[lk, LI_CNT] > 0:
                comp_links[m] = lk
                m += 1
        nl = m


# ---- ghosts: flows alone on their links, drained on paper -----------------------------------
# A flow that enters links nobody else uses runs at its narrowest link's rate until someone joins
# it, so its drain time is known at injection: its arrival is queued right away and it never
# enters the drain heap (two fewer events per transfer). Nor does it go on the links' flow lists
# (the threading and unthreading were a fifth of a congested ring's time): each of its links
# remembers it instead (l_gslot) with its drain time (l_gend), and a link whose ghost has not
# drained yet is taken. A flow that enters such a link turns the ghost back into an ordinary flow
# (revival: threaded then, its queued arrival void, STALE). A live ghost is alone on each of its
# links, so a link has at most one; once its drain time has passed the entry is simply dead (the
# slot may be reused after the ghost's arrival, which is later than its drain).
@njit(**_HOT)
def _revive(I, now, s, S, A, Ai, T, p_ptr, p_link, p_frac, e_link, e_frac, e_next, e_prev, L,
            Li):
    A[s, AF_REM] -= A[s, AF_RATE] * (now - A[s, AF_LAST])
    A[s, AF_LAST] = now
    A[s, AF_RATE] = 0.0  # so that the solve sets its rate and puts it in the drain heap
    Ai[s, AI_POS] = -1
    k = Ai[s, AI_TID] - I[I_TBASE]
    T[k, T_STATE] = ACTIVE | STALE
    I[I_REVIVED] += 1
    p0 = p_ptr[T[k, T_PAIR]]
    for q in range(Ai[s, AI_N]):
        lk = p_link[p0 + q]
        L[lk, LF_GEND] = -1.0
        e = s * S + q
        e_link[e] = lk
        e_frac[e] = p_frac[p0 + q]
        # alone on its links: nothing to link behind (the flow joining it goes in front)
        e_next[e] = -1
        e_prev[e] = -1
        Li[lk, LI_HEAD] = e


@njit(**_HOT)
def _set_rate(I, now, s, rate, A, Ai, d_heap):
    if rate == A[s, AF_RATE]:
        return
    A[s, AF_REM] -= A[s, AF_RATE] * (now - A[s, AF_LAST])
    A[s, AF_LAST] = now
    A[s, AF_RATE] = rate
    A[s, AF_END] = now + max(A[s, AF_REM], 0.0) / rate
    if Ai[s, AI_POS] >= 0:
        _dmove(d_heap, A, Ai, Ai[s, AI_POS], I[I_DN])
    else:
        _dinsert(I, d_heap, A, Ai, s)


# ---- the loop ---------------------------------------------------------------------------------
@njit(**_JIT)
def _sift(a, i, n):
    while True:
        c = 2 * i + 1
        if c >= n:
            return
        if c + 1 < n and a[c + 1] > a[c]:
            c += 1
        if a[i] >= a[c]:
            return
        a[i], a[c] = a[c], a[i]
        i = c


@njit(**_JIT)
def _sort_prefix(a, n):
    """Sort a[:n] in place without allocating: insertion sort for the usual handful, heapsort
    beyond (the loop runs without Numba's reference counting, so nothing may allocate)."""
    if n > 32:
        for start in range(n // 2 - 1, -1, -1):
            _sift(a, start, n)
        for end in range(n - 1, 0, -1):
            a[0], a[end] = a[end], a[0]
            _sift(a, 0, end)
        return
    for i in range(1, n):
        x = a[i]
        j = i - 1
        while j >= 0 and a[j] > x:
            a[j + 1] = a[j]
            j -= 1
        a[j + 1] = x


@njit(**_HOT)
def _log(I, lg_t, lg_k, lg_i, t, kind, tid):
    if I[I_LOG]:
        n = I[I_LOG_N]
        lg_t[n], lg_k[n], lg_i[n] = t, kind, tid
        I[I_LOG_N] = n + 1


@njit(cache=True, inline="always")
def _start_ready(I, F, Q, now, ranks, n_ranks, cand, r_cur, T, G, m_tid, s_start, h_t, h_q, h_k,
                 h_i, lg_t, lg_k, lg_i):
    """Start every transfer of the ranks' current groups whose other end is there too, in
    transfer order (the reference's sorted candidate set)."""
    tb, gb, mb = I[I_TBASE], I[I_GBASE], I[I_MBASE]
    nc = 0
    for j in range(n_ranks):
        r = ranks[j]
        g = r_cur[r]
        if g < 0:
            continue
        gl = g - gb
        lo = G[gl, G_MPTR] - mb
        for q in range(G[gl, G_MLEN]):
            # a group's first members sit in its own row: no trip to the member table
            tid = G[gl, G_M0 + q] if q < G_INLINE else m_tid[lo + q]
            k = tid - tb
            if T[k, T_STATE] != WAITING:
                continue
            if T[k, T_SRC] == r:
                ok = r_cur[T[k, T_DST]] == T[k, T_GD]
            else:
                ok = r_cur[T[k, T_SRC]] == T[k, T_GS]
            if ok:
                T[k, T_STATE] = STARTED  # also dedupes a transfer both ends bring in
                cand[nc] = tid
                nc += 1
                st = G[gl, G_STEP]
                if now < s_start[st]:
                    s_start[st] = now
    if nc == 0:
        return
    _sort_prefix(cand, nc)
    alpha = F[F_ALPHA]
    for j in range(nc):
        tid = cand[j]
        _log(I, lg_t, lg_k, lg_i, now, LOG_START, tid)
        _push(I, Q, h_t, h_q, h_k, h_i, now + alpha, INJECT, tid, LANE_INJECT)


@njit(**_JIT)
def run(
        I, F, Q, T, t_bytes, G, m_tid, r_cur, r_wait, pend, cand, compute_free, p_ptr,
        p_link, p_frac, p_lat, p_cls, h_t, h_q, h_k, h_i, d_heap, A, Ai, a_mark, a_free, e_link,
        e_frac, e_next, e_prev, L, Li, comp, comp_links, seeds, moved, s_start, s_end, lg_t, lg_k,
        lg_i, p_twice):
    S = I[I_STRIDE]
    slots = Ai.shape[0]
    drain_rel, gamma = F[F_DRAIN_REL], F[F_GAMMA]
    # ranks that moved on before we stopped for more steps: resolve and start them first
    if I[I_PEND_N] > 0:
        gb = I[I_GBASE]
        for j in range(I[I_PEND_N]):
            r = pend[j]
            if r_cur[r] == WAITING_RANK:
                nxt = G[r_wait[r] - gb, G_NEXT]
                if nxt >= 0:
                    r_cur[r] = nxt
                elif I[I_ALL_LOADED]:
                    r_cur[r] = FINISHED_RANK
                else:
                    return NEED_STEPS
        n = I[I_PEND_N]
        I[I_PEND_N] = 0
        _sort_prefix(pend, n)
        _start_ready(I, F, Q, F[F_PEND_T], pend, n, cand, r_cur, T, G, m_tid, s_start, h_t, h_q,
                     h_k, h_i, lg_t, lg_k, lg_i)
    while True:
        pos = _front(I, Q, h_t, h_q)
        t_ev = h_t[pos] if pos >= 0 else np.inf
        t_dr = A[d_heap[0], AF_END] if I[I_DN] > 0 else np.inf
        if t_ev == np.inf and t_dr == np.inf:
            return FINISHED
        I[I_EVENTS] += 1
        if t_dr <= t_ev:
            # every flow (in transfer order) that has drained by now leaves together
            now = t_dr
            nd = 0
            while I[I_DN] > 0:
                s = d_heap[0]
                if nd > 0 and A[s, AF_END] > now:
                    left = A[s, AF_REM] - A[s, AF_RATE] * (now - A[s, AF_LAST])
                    if left > drain_rel * t_bytes[Ai[s, AI_TID] - I[I_TBASE]]:
                        break
                _dremove(I, d_heap, A, Ai, s)
                cand[nd] = Ai[s, AI_INJ] * slots + s  # injection order, as the reference's list
                nd += 1
            _sort_prefix(cand, nd)
            ns = 0
            for j in range(nd):
                s = cand[j] % slots
                tid = Ai[s, AI_TID]
                k = tid - I[I_TBASE]
                _log(I, lg_t, lg_k, lg_i, now, LOG_DRAIN, tid)
                T[k, T_STATE] = DRAINED | (T[k, T_STATE] & STALE)
                pr = T[k, T_PAIR]
                _push(I, Q, h_t, h_q, h_k, h_i, now + p_lat[pr], ARRIVE, tid,
                      LANE_ARRIVE + p_cls[pr] if p_cls[pr] >= 0 else -1)
                # unlink; its neighbours on shared links are the seeds of the re-solve
                for q in range(Ai[s, AI_N]):
                    e = s * S + q
                    lk = e_link[e]
                    if e_prev[e] >= 0:
                        e_next[e_prev[e]] = e_next[e]
                    else:
                        Li[lk, LI_HEAD] = e_next[e]
                    if e_next[e] >= 0:
                        e_prev[e_next[e]] = e_prev[e]
                for q in range(Ai[s, AI_N]):
                    x = Li[e_link[s * S + q], LI_HEAD]
                    if x >= 0:
                        seeds[ns] = x // S
                        ns += 1
                T[k, T_SLOT] = -1
                a_free[I[I_NFREE]] = s
                I[I_NFREE] += 1
            if ns > 0:
                # a seed may have drained later in this batch (its slot is free again)
                m = 0
                for j in range(ns):
                    s = seeds[j]
                    if T[Ai[s, AI_TID] - I[I_TBASE], T_SLOT] == s:
                        seeds[m] = s
                        m += 1
                if m > 0:
                    _solve_component(I, F, now, seeds, m, S, A, Ai, a_mark, e_link, e_frac,
                                     e_next, L, Li, comp, comp_links, d_heap, T)
            continue
        kind, tid = h_k[pos], h_i[pos]
        if kind == INJECT and I[I_NFREE] == 0:
            return NEED_SLOTS
        now = t_ev
        lane = _take(I, Q, h_t, h_q, h_k, h_i, pos)
        if COMPILED and lane >= 0:
            _ahead(I, Q, h_t, h_q, h_i, T, G, t_bytes, compute_free, r_cur, p_ptr, p_link,
                   p_frac, p_lat, p_cls, p_twice, L, lane)
        k = tid - I[I_TBASE]
        pr = T[k, T_PAIR]
        if kind == INJECT:
            # every injection due now enters before rates are re-solved once (as the
            # reference does with all heap events of one instant): a synchronous step of p
            # flows costs one solve, not p
            ns = 0
            while True:
                n_e = p_ptr[pr + 1] - p_ptr[pr]
                if t_bytes[k] == 0.0 or n_e == 0:
                    _log(I, lg_t, lg_k, lg_i, now, LOG_DRAIN, tid)
                    T[k, T_STATE] = DRAINED
                    _push(I, Q, h_t, h_q, h_k, h_i, now + p_lat[pr], ARRIVE, tid,
                          LANE_ARRIVE + p_cls[pr] if p_cls[pr] >= 0 else -1)
                else:
                    I[I_NFREE] -= 1
                    s = a_free[I[I_NFREE]]
                    T[k, T_SLOT] = s
                    T[k, T_STATE] = ACTIVE
                    Ai[s, AI_TID] = tid
                    Ai[s, AI_INJ] = I[I_INJ]  # drains of one instant go in injection order
                    I[I_INJ] += 1
                    A[s, AF_REM] = t_bytes[k]
                    A[s, AF_RATE] = 0.0
                    A[s, AF_LAST] = now
                    Ai[s, AI_N] = n_e
                    Ai[s, AI_POS] = -1
                    alone = p_twice[pr] == 0
                    rate = np.inf
                    p0 = p_ptr[pr]
                    for q in range(n_e):
                        lk = p_link[p0 + q]
                        if L[lk, LF_GEND] > now:
                            # a ghost that has not drained has company now; the solve finds it on
                            # this link from this flow, as it finds every flow sharing one
                            _revive(I, now, Li[lk, LI_GSLOT], S, A, Ai, T, p_ptr, p_link,
                                    p_frac, e_link, e_frac, e_next, e_prev, L, Li)
                        if Li[lk, LI_HEAD] >= 0:
                            alone = False
                        r_q = L[lk, LF_CAP] / p_frac[p0 + q]
                        if r_q < rate:
                            rate = r_q
                    if alone and not I[I_LOG]:
                        # its own component, the narrowest link its bottleneck until someone
                        # joins: a ghost (the event log keeps every drain, so not when logging)
                        A[s, AF_RATE] = rate
                        end = now + t_bytes[k] / rate
                        A[s, AF_END] = end
                        Ai[s, AI_POS] = GHOST_POS
                        T[k, T_STATE] = GHOST
                        I[I_GHOSTS] += 1
                        for q in range(n_e):
                            lk = p_link[p0 + q]
                            L[lk, LF_GEND] = end
                            Li[lk, LI_GSLOT] = s
                        _push(I, Q, h_t, h_q, h_k, h_i, end + p_lat[pr], ARRIVE, tid,
                              LANE_ARRIVE + p_cls[pr] if p_cls[pr] >= 0 else -1)
                    else:
                        for q in range(n_e):
                            lk = p_link[p0 + q]
                            e = s * S + q
                            e_link[e] = lk
                            e_frac[e] = p_frac[p0 + q]
                            if Li[lk, LI_HEAD] >= 0:
                                e_prev[Li[lk, LI_HEAD]] = e
                            e_next[e] = Li[lk, LI_HEAD]
                            e_prev[e] = -1
                            Li[lk, LI_HEAD] = e
                        if alone:  # its own component: the narrowest link is its bottleneck
                            _set_rate(I, now, s, rate, A, Ai, d_heap)
                        else:
                            seeds[ns] = s
                            ns += 1
                pos = _front(I, Q, h_t, h_q)
                if pos < 0 or h_k[pos] != INJECT or h_t[pos] != now or I[I_NFREE] == 0:
                    break
                tid = h_i[pos]
                lane = _take(I, Q, h_t, h_q, h_k, h_i, pos)
                if COMPILED and lane >= 0:
                    _ahead(I, Q, h_t, h_q, h_i, T, G, t_bytes, compute_free, r_cur, p_ptr,
                           p_link, p_frac, p_lat, p_cls, p_twice, L, lane)
                k = tid - I[I_TBASE]
                pr = T[k, T_PAIR]
            if ns > 0:
                _solve_component(I, F, now, seeds, ns, S, A, Ai, a_mark, e_link, e_frac, e_next,
                                 L, Li, comp, comp_links, d_heap, T)
        elif kind == ARRIVE:
            st = T[k, T_STATE]
            if st & STALE:  # queued when it was a ghost; it was revived and drains again
                T[k, T_STATE] = st & ~STALE
                continue
            if st == GHOST:  # on no list: its slot is all there is to free
                s = T[k, T_SLOT]
                T[k, T_SLOT] = -1
                Ai[s, AI_POS] = -1
                a_free[I[I_NFREE]] = s
                I[I_NFREE] += 1
            done_t = now
            if T[k, T_RED]:
                d = T[k, T_DST]
                done_t = max(now, compute_free[d]) + gamma * t_bytes[k]
                compute_free[d] = done_t
            T[k, T_STATE] = ARRIVED
            nxt_pos = _front(I, Q, h_t, h_q)
            if done_t == now and (nxt_pos < 0 or h_t[nxt_pos] > now) and (
                    I[I_DN] == 0 or A[d_heap[0], AF_END] > now):
                # its completion would be the very next event (latest sequence number, nothing
                # else due by now): complete it here instead of queueing it
                I[I_SEQ] += 1
                kind = DONE
            else:
                _push(I, Q, h_t, h_q, h_k, h_i, done_t, DONE, tid,
                      LANE_REDUCED if T[k, T_RED] else LANE_DONE)
        if kind == DONE:
            _log(I, lg_t, lg_k, lg_i, now, LOG_DONE, tid)
            T[k, T_STATE] = COMPLETE
            st = G[T[k, T_GS] - I[I_GBASE], G_STEP]
            if now > s_end[st]:
                s_end[st] = now
            a, b = T[k, T_SRC], T[k, T_DST]
            ga, gbb = T[k, T_GS], T[k, T_GD]
            if a > b:  # ranks in order, as the reference's sorted({src, dst})
                a, b, ga, gbb = b, a, gbb, ga
            nm = 0
            stalled = False
            for side in range(2 if a != b else 1):
                r, g = (a, ga) if side == 0 else (b, gbb)
                gl = g - I[I_GBASE]
                G[gl, G_LEFT] -= 1
                if G[gl, G_LEFT] == 0:
                    nxt = G[gl, G_NEXT]
                    if nxt >= 0:
                        r_cur[r] = nxt
                    elif I[I_ALL_LOADED]:
                        r_cur[r] = FINISHED_RANK
                    else:
                        r_cur[r] = WAITING_RANK
                        r_wait[r] = g
                        stalled = True
                    moved[nm] = r
                    nm += 1
            if stalled:
                for j in range(nm):
                    pend[j] = moved[j]
                I[I_PEND_N] = nm
                I[I_STALLS] += 1
                F[F_PEND_T] = now
                return NEED_STEPS
            if nm > 0:
                _start_ready(I, F, Q, now, moved, nm, cand, r_cur, T, G, m_tid, s_start, h_t,
                             h_q, h_k, h_i, lg_t, lg_k, lg_i)

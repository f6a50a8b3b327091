"""The MPI interpreter of schedules: run one rank's part of a Schedule on a real buffer.

Hot path (a training loop reduces the same buffer every step): the rank's plan is derived once
per (algorithm, p, n, rank, options), then bound once per buffer to NumPy views of that buffer
and of a scratch array it owns, so a call is a loop over prebuilt views calling uppercase mpi4py
methods — no schedule arrays, no slicing, no allocation. A step with one send and one receive is
a `Sendrecv`; anything else posts `Irecv`s and `Isend`s and waits for all of them.

With `segment_bytes` > 0 (the `ring_pipelined` variant) every transfer is cut into segments of
that size — the same cut on both ends, since both derive it from the same transfer — and a reduce
step combines segment k right after receiving it, while it is still in cache. Measured on a
2-core host this helps little or hurts (more MPI calls, more polling), so it is off by default.

Tags: step s of a blocking call uses tag s mod 512; a non-blocking handle gets one of 63 other
slots of 512 tags, so up to 63 handles may be in flight on one communicator without crossing
messages (32,767, the smallest tag bound MPI allows, is never exceeded). Steps beyond 512
reuse tags, which is safe because MPI never lets two messages with equal (source, tag) overtake.

This module never imports mpi4py.MPI at import time; only the functions that talk to MPI do.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from distnet.allreduce.ops import SUM, ReduceOp, resolve_op
from distnet.allreduce.plan import RankPlan, rank_plan
from distnet.allreduce.registry import SCHEDULES, get
from distnet.allreduce.schedule import Schedule
from distnet.errors import UserError

TAGS_PER_SLOT = 512
HANDLE_SLOTS = 63
_CACHE_LIMIT = 64  # plans: small (a few tuples per step)
# Bindings pin the caller's buffer and own scratch, so bound them by count and by bytes.
_BOUND_LIMIT = 16
_BOUND_LIMIT_BYTES = 1 << 30
_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

# Collective length check before every call (one tiny Allreduce); same setting on every rank.
_check_lengths = os.environ.get("DISTNET_ALLREDUCE_CHECK", "") not in ("", "0")


def set_length_check(enabled: bool) -> None:
    """Turn the cross-rank length check on or off (must be the same on every rank)."""
    global _check_lengths
    _check_lengths = enabled


def validate(buf: object) -> np.ndarray:
    """buf itself if it is a 1-D contiguous writable float32/float64 ndarray, else UserError."""
    if not isinstance(buf, np.ndarray):
        raise UserError(f"all-reduce needs a NumPy array, got {type(buf).__name__}")
    if buf.ndim != 1:
        raise UserError(f"all-reduce needs a 1-D buffer, got shape {buf.shape}")
    if not buf.flags.c_contiguous:
        raise UserError("all-reduce needs a contiguous buffer (use np.ascontiguousarray)")
    if buf.dtype not in _DTYPES:
        raise UserError(f"all-reduce supports float32 and float64, got {buf.dtype}")
    if not buf.flags.writeable:
        raise UserError("all-reduce works in place and needs a writable buffer")
    return buf


def check_lengths(comm: Any, n: int) -> None:
    """Collective: UserError on every rank if the ranks' buffer lengths differ."""
    from mpi4py import MPI

    both = np.array([n, -n], dtype=np.int64)
    comm.Allreduce(MPI.IN_PLACE, both, op=MPI.MAX)
    if both[0] != -both[1]:
        raise UserError(
            f"all-reduce buffer lengths differ across ranks ({-both[1]}..{both[0]} elements)"
        )


# ---- plans: one rank's transfers, cached per (algorithm, p, n, rank, options) ----

ScheduleLike = Schedule | Callable[..., Schedule]
_plans: dict[tuple[Any, ...], tuple[object, RankPlan]] = {}


def _evict(cache: dict[Any, Any], limit: int = _CACHE_LIMIT) -> None:
    while len(cache) > limit:
        del cache[next(iter(cache))]  # oldest first: dicts keep insertion order


def _plan(schedule: ScheduleLike, p: int, n: int, rank: int, opts_key: tuple[Any, ...]) -> RankPlan:
    # A Schedule object is keyed by identity; the cache holds it so the id cannot be reused.
    key = (id(schedule) if isinstance(schedule, Schedule) else schedule, p, n, rank, opts_key)
    hit = _plans.get(key)
    if hit is not None:
        return hit[1]
    if isinstance(schedule, Schedule):
        if (schedule.p, schedule.n) != (p, n):
            raise UserError(
                f"schedule {schedule.name!r} is for p={schedule.p}, n={schedule.n} "
                f"but the call has p={p}, n={n}"
            )
        sched = schedule
    else:
        sched = schedule(p, n, **dict(opts_key))
    plan = rank_plan(sched, rank)
    _plans[key] = (schedule, plan)
    _evict(_plans)
    return plan


# ---- binding: a plan turned into NumPy views of one buffer ----

# A post-receive action: (ufunc or None for a copy, target view of buf, source view).
Post = tuple[Any, np.ndarray, np.ndarray]


@dataclass
class _BoundStep:
    tag: int
    sends: list[tuple[np.ndarray, int]]  # (view, dst) per segment, in order
    recvs: list[tuple[np.ndarray, int]]  # (view, src) per segment, in order
    posts: list[Post]  # per segment, in schedule order: the fixed reduction order
    # Blocking fast path when the step is one send and/or one receive: per segment
    # (send view or None, dst, recv view or None, src, post or None); None otherwise.
    pairs: list[tuple[Any, int, Any, int, Post | None]] | None


@dataclass
class _Bound:
    buf: np.ndarray  # pins the buffer so that id(buf) cannot be reused while cached
    scratch: np.ndarray
    steps: list[_BoundStep]


def _segments(lo: int, hi: int, seg: int) -> list[tuple[int, int]]:
    return [(a, min(hi, a + seg)) for a in range(lo, hi, seg)]


def _bind(plan: RankPlan, buf: np.ndarray, op: ReduceOp, segment_bytes: int) -> _Bound:
    scratch = np.empty(plan.scratch_elems, dtype=buf.dtype)
    seg = max(1, segment_bytes // buf.itemsize if segment_bytes > 0 else buf.shape[0])
    steps: list[_BoundStep] = []
    for rs in plan.steps:
        sends = [(buf[a:b], peer) for peer, lo, hi in rs.sends for a, b in _segments(lo, hi, seg)]
        recvs: list[tuple[np.ndarray, int]] = []
        recv_posts: list[Post | None] = []  # aligned with recvs
        for rv in rs.recvs:
            for a, b in _segments(rv.lo, rv.hi, seg):
                if rv.scratch_lo < 0:
                    recvs.append((buf[a:b], rv.peer))
                    recv_posts.append(None)
                    continue
                s0 = rv.scratch_lo + (a - rv.lo)
                landing = scratch[s0:s0 + (b - a)]
                recvs.append((landing, rv.peer))
                recv_posts.append((op.ufunc if rv.reduce else None, buf[a:b], landing))
        pairs = None
        if len(rs.sends) <= 1 and len(rs.recvs) <= 1:
            pairs = []
            for k in range(max(len(sends), len(recvs))):
                sv, dst = sends[k] if k < len(sends) else (None, 0)
                rview, src = recvs[k] if k < len(recvs) else (None, 0)
                pairs.append((sv, dst, rview, src, recv_posts[k] if k < len(recvs) else None))
        posts = [post for post in recv_posts if post is not None]
        steps.append(_BoundStep(rs.index % TAGS_PER_SLOT, sends, recvs, posts, pairs))
    return _Bound(buf, scratch, steps)


def _apply(post: Post) -> None:
    fn, target, source = post
    if fn is None:
        np.copyto(target, source)
    else:
        fn(target, source, out=target)


_bound_by_id: dict[tuple[Any, ...], _Bound] = {}


def _evict_bound(cache: dict[tuple[Any, ...], _Bound]) -> None:
    _evict(cache, _BOUND_LIMIT)
    while len(cache) > 1 and sum(b.buf.nbytes + b.scratch.nbytes for b in cache.values()) > (
        _BOUND_LIMIT_BYTES
    ):
        del cache[next(iter(cache))]

_bound_by_addr: dict[tuple[Any, ...], _Bound] = {}


def _bound_for(comm: Any, buf: Any, schedule: ScheduleLike, op: Any, segment_bytes: int,
               opts: dict[str, Any]) -> tuple[_Bound, ReduceOp]:
    rop = op if isinstance(op, ReduceOp) else resolve_op(op)
    p, rank = comm.Get_size(), comm.Get_rank()
    opts_key = tuple(sorted(opts.items())) if opts else ()
    key = (id(buf), schedule, rop, p, rank, segment_bytes, opts_key)
    bound = _bound_by_id.get(key)
    if bound is not None and bound.buf is buf and buf.flags.c_contiguous:
        return bound, rop
    validate(buf)
    # A fresh view of memory already bound (bucket slices are new objects every step) reuses
    # that binding: the cached views keep the memory alive, so the address cannot be recycled.
    addr_key = (buf.__array_interface__["data"][0], buf.shape[0], buf.dtype.char, *key[1:])
    bound = _bound_by_addr.get(addr_key)
    if bound is None:
        bound = _bind(_plan(schedule, p, buf.shape[0], rank, opts_key), buf, rop, segment_bytes)
        _bound_by_addr[addr_key] = bound
        _evict_bound(_bound_by_addr)
    if bound.buf is not buf:
        bound = _Bound(buf, bound.scratch, bound.steps)  # same views, pins this object's id
    _bound_by_id[key] = bound
    _evict_bound(_bound_by_id)
    return bound, rop


# ---- running ----


def execute(comm: Any, buf: np.ndarray, schedule: ScheduleLike, op: Any = SUM, *,
            segment_bytes: int = 0, **opts: Any) -> None:
    """Run this rank's part of `schedule` on buf, in place; returns when the rank is done.

    `schedule` is a builder ``(p, n, **opts) -> Schedule`` (cached per p, n, rank, opts) or a
    Schedule built for exactly this p and n. `segment_bytes` > 0 pipelines large transfers in
    segments of that size (every rank must pass the same value).
    """
    bound, _ = _bound_for(comm, buf, schedule, op, segment_bytes, opts)
    if _check_lengths:
        check_lengths(comm, buf.shape[0])
    for st in bound.steps:
        tag = st.tag
        if st.pairs is not None:
            for sv, dst, rv, src, post in st.pairs:
                if sv is not None and rv is not None:
                    comm.Sendrecv(sv, dst, tag, rv, src, tag)
                elif sv is not None:
                    comm.Send(sv, dst, tag)
                else:
                    comm.Recv(rv, src, tag)
                if post is not None:
                    _apply(post)
        else:
            _exchange_all(comm, st, tag)
            for post in st.posts:
                _apply(post)


def _post_step(comm: Any, st: _BoundStep, tag: int) -> list[Any]:
    reqs = [comm.Irecv(v, src, tag) for v, src in st.recvs]
    reqs += [comm.Isend(v, dst, tag) for v, dst in st.sends]
    return reqs


def _exchange_all(comm: Any, st: _BoundStep, tag: int) -> None:
    from mpi4py import MPI

    MPI.Request.Waitall(_post_step(comm, st, tag))


class Handle:
    """A schedule run in flight: `test` advances it without blocking, `wait` finishes it."""

    def __init__(self, comm: Any, steps: list[_BoundStep], tag_base: int) -> None:
        self._comm = comm
        self._steps = steps
        self._base = tag_base
        self._i = 0
        self._reqs: list[Any] | None = None

    @property
    def done(self) -> bool:
        return self._i >= len(self._steps)

    def _finish_step(self) -> None:
        for post in self._steps[self._i].posts:
            _apply(post)
        self._i += 1
        self._reqs = None

    def _ensure_posted(self) -> list[Any]:
        if self._reqs is None:
            st = self._steps[self._i]
            self._reqs = _post_step(self._comm, st, self._base + st.tag)
        return self._reqs

    def test(self) -> bool:
        """Post and complete as many steps as possible without blocking; True when finished."""
        from mpi4py import MPI

        while self._i < len(self._steps):
            if not MPI.Request.Testall(self._ensure_posted()):
                return False
            self._finish_step()
        return True

    def wait(self) -> None:
        """Block until every step has completed."""
        from mpi4py import MPI

        while self._i < len(self._steps):
            MPI.Request.Waitall(self._ensure_posted())
            self._finish_step()


class DoneHandle:
    """A reduction that already completed (algorithms without a non-blocking form)."""

    def test(self) -> bool:
        return True

    def wait(self) -> None:
        return None


# Algorithms whose non-blocking form is not a plain schedule (native, hierarchical).
Starter = Callable[[Any, np.ndarray, ReduceOp], Any]
STARTERS: dict[str, Starter] = {}


def register_start(name: str, starter: Starter) -> None:
    """Give algorithm `name` its own non-blocking start (duplicates refused)."""
    if name in STARTERS:
        raise ValueError(f"non-blocking start for {name!r} is already registered")
    STARTERS[name] = starter


_seq_keyval: int | None = None


def _next_tag_base(comm: Any) -> int:
    """Tag base of the next handle on comm: slots 1..63 in turn (slot 0 is blocking calls).

    The counter lives on the communicator (an MPI attribute), so every rank, starting the same
    handles in the same order, computes the same base.
    """
    global _seq_keyval
    from mpi4py import MPI

    if _seq_keyval is None:
        _seq_keyval = MPI.Comm.Create_keyval()
    seq = comm.Get_attr(_seq_keyval) or 0
    comm.Set_attr(_seq_keyval, seq + 1)
    return (1 + seq % HANDLE_SLOTS) * TAGS_PER_SLOT


def start_schedule(comm: Any, buf: np.ndarray, schedule: ScheduleLike, op: Any = SUM, *,
                   segment_bytes: int = 0, **opts: Any) -> Handle:
    """Begin running `schedule` on buf; nothing blocks until `wait`."""
    bound, _ = _bound_for(comm, buf, schedule, op, segment_bytes, opts)
    if _check_lengths:
        check_lengths(comm, buf.shape[0])
    handle = Handle(comm, bound.steps, _next_tag_base(comm))
    handle.test()  # post the first step now so peers can make progress
    return handle


def start(comm: Any, buf: np.ndarray, name: str, op: Any = SUM) -> Any:
    """Begin all-reducing buf in place with registered algorithm `name`; returns a handle.

    The handle has ``test() -> bool`` (advance without blocking, True when finished) and
    ``wait()``. Start handles in the same order on every rank, at most 63 in flight per comm,
    and never two on the same buffer at once.
    """
    rop = resolve_op(op)
    validate(buf)
    if name in STARTERS:
        return STARTERS[name](comm, buf, rop)
    if name in SCHEDULES:
        return start_schedule(comm, buf, SCHEDULES[name], rop)
    get(name)(comm, buf, op=rop)  # no non-blocking form: run it now
    return DoneHandle()

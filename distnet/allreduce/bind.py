"""Compile side of the executor: a rank's plan, bound to NumPy views of one buffer (no MPI).

The rank's plan is derived once per (algorithm, p, n, rank, options) and cached; it is then bound
once per buffer to views of that buffer and of a scratch array the binding owns, so a call only
loops over prebuilt views. Bindings are found by the buffer's identity, or — for a fresh view of
memory already bound (bucket slices are new objects every step) — by its address: the cached
views keep that memory alive, so the address cannot be recycled while the entry exists.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from distnet.allreduce.ops import ReduceOp, resolve_op
from distnet.allreduce.plan import RankPlan, rank_plan
from distnet.allreduce.schedule import Schedule
from distnet.common.errors import UserError

TAGS_PER_SLOT = 512  # tags per step window (see execute.py)
_CACHE_LIMIT = 64  # plans: small (a few tuples per step)
# Bindings pin the caller's buffer and own scratch, so bound them by count and by bytes.
_BOUND_LIMIT = 16
_BOUND_LIMIT_BYTES = 1 << 30
_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

# Collective length check before every call (one tiny Allreduce); same setting on every rank.
check_lengths_enabled = os.environ.get("DISTNET_ALLREDUCE_CHECK", "") not in ("", "0")


def set_length_check(enabled: bool) -> None:
    """Turn the cross-rank length check on or off (must be the same on every rank)."""
    global check_lengths_enabled
    check_lengths_enabled = enabled


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
class BoundStep:
    tag: int
    sends: list[tuple[np.ndarray, int]]  # (view, dst) per segment, in order
    recvs: list[tuple[np.ndarray, int]]  # (view, src) per segment, in order
    posts: list[Post]  # per segment, in schedule order: the fixed reduction order
    # Blocking fast path when the step is one send and/or one receive: per segment
    # (send view or None, dst, recv view or None, src, post or None); None otherwise.
    pairs: list[tuple[Any, int, Any, int, Post | None]] | None


@dataclass
class Bound:
    buf: np.ndarray  # pins the buffer so that id(buf) cannot be reused while cached
    scratch: np.ndarray
    steps: list[BoundStep]
    schedule: object  # pins a Schedule object keyed by id() likewise
    program: list[tuple[Any, ...]] | None = None  # the executor's flattened form, built lazily


def _segments(lo: int, hi: int, seg: int) -> list[tuple[int, int]]:
    return [(a, min(hi, a + seg)) for a in range(lo, hi, seg)]


def _bind(plan: RankPlan, buf: np.ndarray, op: ReduceOp, segment_bytes: int) -> Bound:
    scratch = np.empty(plan.scratch_elems, dtype=buf.dtype)
    seg = max(1, segment_bytes // buf.itemsize if segment_bytes > 0 else buf.shape[0])
    steps: list[BoundStep] = []
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
        steps.append(BoundStep(rs.index % TAGS_PER_SLOT, sends, recvs, posts, pairs))
    return Bound(buf, scratch, steps, None)


def apply_post(post: Post) -> None:
    fn, target, source = post
    if fn is None:
        np.copyto(target, source)
    else:
        fn(target, source, out=target)


_bound_by_id: dict[tuple[Any, ...], Bound] = {}
_bound_by_addr: dict[tuple[Any, ...], Bound] = {}


def _evict_bound(cache: dict[tuple[Any, ...], Bound]) -> None:
    _evict(cache, _BOUND_LIMIT)
    while len(cache) > 1 and sum(b.buf.nbytes + b.scratch.nbytes for b in cache.values()) > (
        _BOUND_LIMIT_BYTES
    ):
        del cache[next(iter(cache))]


def bound_for(comm: Any, buf: Any, schedule: ScheduleLike, op: Any, segment_bytes: int,
              opts: dict[str, Any]) -> tuple[Bound, ReduceOp]:
    """The binding of `schedule` to buf for this rank of comm (validates buf on a cache miss)."""
    last = _last
    if (last is not None and last[0] is buf and last[1] is schedule and last[2] is op
            and last[3] is comm and last[4] == segment_bytes and not opts):
        return last[5], last[6]  # the training loop: same buffer, same call, every step
    rop = op if isinstance(op, ReduceOp) else resolve_op(op)
    p, rank = comm.Get_size(), comm.Get_rank()
    opts_key = tuple(sorted(opts.items())) if opts else ()
    sched_key = id(schedule) if isinstance(schedule, Schedule) else schedule  # not hashable
    key = (id(buf), sched_key, rop.name, p, rank, segment_bytes, opts_key)
    bound = _bound_by_id.get(key)
    if bound is not None and bound.buf is buf and buf.flags.c_contiguous:
        _remember(buf, schedule, op, comm, segment_bytes, bound, rop)
        return bound, rop
    validate(buf)
    # A fresh view of memory already bound (bucket slices are new objects every step) reuses
    # that binding: the cached views keep the memory alive, so the address cannot be recycled.
    addr_key = (buf.__array_interface__["data"][0], buf.shape[0], buf.dtype.char, *key[1:])
    bound = _bound_by_addr.get(addr_key)
    if bound is None:
        bound = _bind(_plan(schedule, p, buf.shape[0], rank, opts_key), buf, rop, segment_bytes)
        bound.schedule = schedule
        _bound_by_addr[addr_key] = bound
        _evict_bound(_bound_by_addr)
    if bound.buf is not buf:
        bound = Bound(buf, bound.scratch, bound.steps, schedule)  # same views; pins this id
    _bound_by_id[key] = bound
    _evict_bound(_bound_by_id)
    _remember(buf, schedule, op, comm, segment_bytes, bound, rop)
    return bound, rop


# The last call's arguments and result, compared by identity: a hit skips building the key.
_last: tuple[Any, ...] | None = None


def _remember(*entry: Any) -> None:
    global _last
    _last = entry

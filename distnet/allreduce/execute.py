"""The MPI interpreter of schedules: run one rank's part of a Schedule on a real buffer.

Hot path (a training loop reduces the same buffer every step): `bind` turns the rank's cached
plan into prebuilt NumPy views once per buffer, so a call here is a loop over those views calling
uppercase mpi4py methods — no schedule arrays, no slicing, no allocation. A step with one send
and one receive is a `Sendrecv`; anything else posts `Irecv`s and `Isend`s and waits for all.
Non-blocking: `start` returns a handle whose `test` posts and completes steps without blocking.

With `segment_bytes` > 0 (the `ring_pipelined` variant) every transfer is cut into segments of
that size — the same cut on both ends, since both derive it from the same transfer — and a reduce
step combines segment k right after receiving it, while it is still in cache. Measured on a
2-core host shared with other jobs it does not pay: each segment is one more rendezvous that
needs the peer scheduled, so medians tie with the plain ring and means grow with outliers
(16 MiB, p=2: ring 5.4 ms, 1 MiB segments 4.5 ms median but 27 ms mean). Off by default.

Tags: step s of a blocking call uses tag s mod 512; a non-blocking handle gets one of 63 other
slots of 512 tags, so up to 63 handles may be in flight on one communicator without crossing
messages (32,767, the smallest tag bound MPI allows, is never exceeded). Steps beyond 512
reuse tags, which is safe because MPI never lets two messages with equal (source, tag) overtake.

This module never imports mpi4py.MPI at import time; only the functions that talk to MPI do.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from distnet.allreduce import bind
from distnet.allreduce.bind import (
    TAGS_PER_SLOT,
    Bound,
    BoundStep,
    Post,
    ScheduleLike,
    apply_post,
    bound_for,
    set_length_check,
    validate,
)
from distnet.allreduce.ops import SUM, ReduceOp, resolve_op
from distnet.allreduce.registry import SCHEDULES, get
from distnet.common.errors import UserError

HANDLE_SLOTS = 63

__all__ = ["execute", "set_length_check", "start", "start_schedule", "validate"]


def check_lengths(comm: Any, n: int) -> None:
    """Collective: UserError on every rank if the ranks' buffer lengths differ."""
    from mpi4py import MPI

    both = np.array([n, -n], dtype=np.int64)
    comm.Allreduce(MPI.IN_PLACE, both, op=MPI.MAX)
    if both[0] != -both[1]:
        raise UserError(
            f"all-reduce buffer lengths differ across ranks ({-both[1]}..{both[0]} elements)"
        )


def execute(comm: Any, buf: np.ndarray, schedule: ScheduleLike, op: Any = SUM, *,
            segment_bytes: int = 0, **opts: Any) -> None:
    """Run this rank's part of `schedule` on buf, in place; returns when the rank is done.

    `schedule` is a builder ``(p, n, **opts) -> Schedule`` (cached per p, n, rank, opts) or a
    Schedule built for exactly this p and n. `segment_bytes` > 0 pipelines large transfers in
    segments of that size (every rank must pass the same value).
    """
    bound, _ = bound_for(comm, buf, schedule, op, segment_bytes, opts)
    if bind.check_lengths_enabled:
        check_lengths(comm, buf.shape[0])
    program = bound.program if bound.program is not None else _compile(bound)
    for ins in program:
        code = ins[0]
        if code == _SENDRECV:
            comm.Sendrecv(ins[1], ins[2], ins[3], ins[4], ins[5], ins[3])
        elif code == _REDUCE:
            ins[1](ins[2], ins[3], out=ins[2])
        elif code == _COPY:
            np.copyto(ins[1], ins[2])
        elif code == _SEND:
            comm.Send(ins[1], ins[2], ins[3])
        elif code == _RECV:
            comm.Recv(ins[1], ins[2], ins[3])
        else:
            _exchange_all(comm, ins[1], ins[1].tag)


# Instructions of a compiled program (flat, so the hot loop does one dispatch per MPI call).
_SENDRECV, _REDUCE, _COPY, _SEND, _RECV, _MULTI = range(6)


def _spec(view: np.ndarray) -> list[Any]:
    """A prebuilt mpi4py message [memory, count, datatype]: skips re-parsing the array per call."""
    from mpi4py import MPI

    return [MPI.buffer(view), view.shape[0], MPI.FLOAT if view.itemsize == 4 else MPI.DOUBLE]


def _post_ins(post: Post) -> tuple[Any, ...]:
    fn, target, source = post
    return (_COPY, target, source) if fn is None else (_REDUCE, fn, target, source)


def _compile(bound: Bound) -> list[tuple[Any, ...]]:
    program: list[tuple[Any, ...]] = []
    for st in bound.steps:
        if st.pairs is None:
            program.append((_MULTI, st))
            program += [_post_ins(post) for post in st.posts]
            continue
        for sv, dst, rv, src, post in st.pairs:
            if sv is not None and rv is not None:
                program.append((_SENDRECV, _spec(sv), dst, st.tag, _spec(rv), src))
            elif sv is not None:
                program.append((_SEND, _spec(sv), dst, st.tag))
            else:
                program.append((_RECV, _spec(rv), src, st.tag))
            if post is not None:
                program.append(_post_ins(post))
    bound.program = program
    return program


def _post_step(comm: Any, st: BoundStep, tag: int) -> list[Any]:
    reqs = [comm.Irecv(v, src, tag) for v, src in st.recvs]
    reqs += [comm.Isend(v, dst, tag) for v, dst in st.sends]
    return reqs


def _exchange_all(comm: Any, st: BoundStep, tag: int) -> None:
    from mpi4py import MPI

    MPI.Request.Waitall(_post_step(comm, st, tag))


class Handle:
    """A schedule run in flight: `test` advances it without blocking, `wait` finishes it."""

    def __init__(self, comm: Any, steps: list[BoundStep], tag_base: int) -> None:
        self._comm = comm
        self._steps = steps
        self._base = tag_base
        self._i = 0
        self._reqs: list[Any] | None = None
        self._posted_s = 0.0
        # Set to a list to have (step, posted, seen done) perf_counter times appended (tracing).
        self.step_log: list[tuple[int, float, float]] | None = None

    @property
    def done(self) -> bool:
        return self._i >= len(self._steps)

    def _finish_step(self) -> None:
        if self.step_log is not None:
            self.step_log.append((self._i, self._posted_s, time.perf_counter()))
        for post in self._steps[self._i].posts:
            apply_post(post)
        self._i += 1
        self._reqs = None

    def _ensure_posted(self) -> list[Any]:
        if self._reqs is None:
            st = self._steps[self._i]
            if self.step_log is not None:
                self._posted_s = time.perf_counter()
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
    bound, _ = bound_for(comm, buf, schedule, op, segment_bytes, opts)
    if bind.check_lengths_enabled:
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

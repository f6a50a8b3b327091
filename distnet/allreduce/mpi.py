"""The MPI executor: run this rank's part of a `Schedule` on a real buffer, in place.

A call has two halves.

**Compile** (once per communicator, buffer and schedule; the result is a `Run`, kept in the
communicator's `RunCache`). Walk the schedule's steps, keep the transfers this rank sends or
receives, and turn each into a `Message`: a prebuilt mpi4py ``[memory, count, datatype]`` on a
NumPy view, so the hot path never slices, never parses an array and never looks at the p-wide step
arrays again. Zero-length transfers are dropped (on both ends alike: both read the same schedule).
A received chunk lands straight in the buffer when it is a copy that nothing else in the step
reads or writes; otherwise — a reduction always needs the old value — it lands in scratch, and a
`Combine` folds it in after the step, in schedule order: the fixed reduction order that makes
every rank end bitwise identical.

**Run.** `execute` calls the run's `actions`, one flat tuple of prepared calls: a `Sendrecv` for a
step of one send and one receive (a lone `Send` or `Recv` when only one side is there), `Irecv`s
and `Isend`s and one `Waitall` for anything else, each step followed by its combines. `start`
returns a `ScheduleRequest` whose `test()` posts and completes steps without blocking; the
`Bucketer` polls it while backward computes.

Tags: step s of a blocking call uses tag s mod 512; a request gets one of 63 other windows of 512
tags, so up to 63 requests may be in flight on one communicator without crossing messages (32,767,
the smallest tag bound MPI allows, is never exceeded). Steps beyond 512 reuse tags, which is safe
because MPI never lets two messages with equal (source, tag) overtake each other.

Everything the all-reduce code remembers about a communicator lives in one `CommState`, attached
to it as an MPI attribute: `Dup` does not copy it and `Free` drops it, so nothing here can outlive
its communicator or be confused by a recycled handle. mpi4py.MPI is imported only by the functions
that talk to MPI: importing this module starts nothing.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple, Protocol

import ml_dtypes
import numpy as np

from distnet.allreduce.ops import SUM, ReduceOp, resolve_op
from distnet.allreduce.registry import SCHEDULES, STARTERS, get
from distnet.allreduce.schedule import Schedule
from distnet.common.errors import UserError

TAGS_PER_WINDOW = 512
REQUEST_WINDOWS = 63  # windows 1..63; window 0 is the blocking calls'
# A run pins its buffer and owns scratch: bound the cache by count and by bytes, per communicator.
RUNS_PER_COMM = 16
RUN_BYTES_PER_COMM = 1 << 30
# "1" turns on a collective length check before every call (one tiny Allreduce); the same on
# every rank, read when a communicator is first used.
CHECK_ENV = "DISTNET_ALLREDUCE_CHECK"
# float16 and bfloat16 are the wire types of gradient compression (distnet/compress): messages
# carry their bits as 16-bit words, and a combine is NumPy's (or ml_dtypes') ufunc, which
# computes each sum in float32 and rounds it once to the narrow type.
_DTYPES = (np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.float16),
           np.dtype(ml_dtypes.bfloat16))

# A builder ``(p, n, **opts) -> Schedule`` or a Schedule built for exactly this p and n.
ScheduleLike = Schedule | Callable[..., Schedule]


def validate(buf: object) -> np.ndarray:
    """buf itself if it is a 1-D contiguous writable float ndarray (32, 64 or 16 bits)."""
    if not isinstance(buf, np.ndarray):
        raise UserError(f"all-reduce needs a NumPy array, got {type(buf).__name__}")
    if buf.ndim != 1:
        raise UserError(f"all-reduce needs a 1-D buffer, got shape {buf.shape}")
    if not buf.flags.c_contiguous:
        raise UserError("all-reduce needs a contiguous buffer (use np.ascontiguousarray)")
    if buf.dtype not in _DTYPES:
        raise UserError(f"all-reduce supports float32, float64, float16 and bfloat16, "
                        f"got {buf.dtype}")
    if not buf.flags.writeable:
        raise UserError("all-reduce works in place and needs a writable buffer")
    return buf


# ---- compile: a schedule, for one rank, onto one buffer ----------------------------------------

@dataclass(frozen=True)
class Message:
    """One transfer of this rank: a prebuilt mpi4py message over a view, and the peer rank."""

    spec: list[Any]  # [memory, count, MPI datatype]: mpi4py skips re-parsing the array per call
    peer: int


@dataclass(frozen=True)
class Combine:
    """After a step: fold a chunk that landed in scratch into the buffer (ufunc None: copy it)."""

    ufunc: np.ufunc | None
    target: np.ndarray  # view of the buffer
    source: np.ndarray  # view of scratch

    def apply(self) -> None:
        if self.ufunc is None:
            np.copyto(self.target, self.source)
        else:
            self.ufunc(self.target, self.source, out=self.target)

    def action(self) -> Callable[[], object]:
        if self.ufunc is None:
            return partial(np.copyto, self.target, self.source)
        return partial(self.ufunc, self.target, self.source, out=self.target)


@dataclass(frozen=True)
class RankStep:
    """This rank's part of one schedule step (steps in which it does nothing are left out)."""

    tag: int
    sends: tuple[Message, ...]
    recvs: tuple[Message, ...]
    combines: tuple[Combine, ...]  # in schedule order: the fixed reduction order


@dataclass
class Run:
    """A schedule compiled for this rank onto one buffer: what `execute` and `start` replay."""

    buf: np.ndarray  # pins the memory the views point into, whose address keys the cache
    scratch: np.ndarray
    steps: tuple[RankStep, ...]
    actions: tuple[Callable[[], object], ...]  # the blocking form, flattened
    schedule: object  # pins a Schedule object, keyed by id(), while the run is cached

    @property
    def nbytes(self) -> int:
        return int(self.buf.nbytes + self.scratch.nbytes)


class Send(NamedTuple):
    peer: int
    lo: int
    hi: int


class Receive(NamedTuple):
    peer: int
    lo: int
    hi: int
    reduce: bool
    scratch_lo: int  # where it lands in scratch; -1: straight into the buffer


class RankTransfers(NamedTuple):
    """What one rank sends and receives in schedule step `step` (element ranges, no views)."""

    step: int
    sends: list[Send]
    recvs: list[Receive]


def _overlaps(lo: int, hi: int, regions: list[tuple[int, int]]) -> bool:
    return any(lo < b and a < hi for a, b in regions)


def rank_transfers(schedule: Schedule, rank: int) -> tuple[list[RankTransfers], int]:
    """The steps of `schedule` that involve `rank`, with scratch offsets assigned, and the
    largest scratch (in elements) any one step needs. Pure: no MPI, no buffer."""
    steps = []
    scratch_elems = 0
    for s in range(schedule.nsteps):
        st = schedule.step(s)
        live = st.count > 0
        send_idx = np.flatnonzero(live & (st.src == rank))
        recv_idx = np.flatnonzero(live & (st.dst == rank))
        if send_idx.size == 0 and recv_idx.size == 0:
            continue
        sends = [Send(int(st.dst[i]), int(st.offset[i]), int(st.offset[i] + st.count[i]))
                 for i in send_idx]
        if any(snd.peer == rank for snd in sends):
            raise ValueError(f"{schedule.name}: step {s} has rank {rank} sending to itself")
        regions = [(int(st.offset[i]), int(st.offset[i] + st.count[i])) for i in recv_idx]
        sent = [(snd.lo, snd.hi) for snd in sends]
        recvs: list[Receive] = []
        used = 0
        for k, i in enumerate(recv_idx):
            lo, hi = regions[k]
            others = regions[:k] + regions[k + 1:]
            # A copy may land in the buffer only if nothing else reads or writes that region
            # during the step (every send reads the buffer as it was before the step).
            direct = not st.reduce[i] and not _overlaps(lo, hi, sent + others)
            recvs.append(Receive(int(st.src[i]), lo, hi, bool(st.reduce[i]),
                                 -1 if direct else used))
            if not direct:
                used += hi - lo
        scratch_elems = max(scratch_elems, used)
        steps.append(RankTransfers(s, sends, recvs))
    return steps, scratch_elems


def _exchange(comm: Any, step: RankStep, tag: int) -> list[Any]:
    """Post every receive, then every send, of one step (tag = the window base + step tag)."""
    reqs = [comm.Irecv(m.spec, m.peer, tag) for m in step.recvs]
    reqs += [comm.Isend(m.spec, m.peer, tag) for m in step.sends]
    return reqs


def _exchange_and_wait(comm: Any, step: RankStep) -> None:
    from mpi4py import MPI

    MPI.Request.Waitall(_exchange(comm, step, step.tag))


def _blocking_actions(comm: Any, step: RankStep) -> list[Callable[[], object]]:
    """The calls that run one step to completion, then apply its combines."""
    sends, recvs, tag = step.sends, step.recvs, step.tag
    if len(sends) == 1 and len(recvs) == 1:
        act = partial(comm.Sendrecv, sends[0].spec, sends[0].peer, tag,
                      recvs[0].spec, recvs[0].peer, tag)
    elif len(sends) == 1 and not recvs:
        act = partial(comm.Send, sends[0].spec, sends[0].peer, tag)
    elif len(recvs) == 1 and not sends:
        act = partial(comm.Recv, recvs[0].spec, recvs[0].peer, tag)
    else:
        act = partial(_exchange_and_wait, comm, step)
    return [act] + [c.action() for c in step.combines]


def compile_run(comm: Any, schedule: Schedule, buf: np.ndarray, op: ReduceOp) -> Run:
    """This rank's part of `schedule` as prebuilt messages on views of buf and of new scratch."""
    from mpi4py import MPI

    datatype = {2: MPI.UINT16_T, 4: MPI.FLOAT, 8: MPI.DOUBLE}[buf.itemsize]

    def message(view: np.ndarray, peer: int) -> Message:
        words = view.view(np.uint16) if view.itemsize == 2 else view  # a 16-bit float's bits
        return Message([MPI.buffer(words), view.shape[0], datatype], peer)

    transfers, scratch_elems = rank_transfers(schedule, comm.Get_rank())
    scratch = np.empty(scratch_elems, dtype=buf.dtype)
    steps: list[RankStep] = []
    for step, sends, recvs in transfers:
        combines = []
        landings = []
        for rv in recvs:
            if rv.scratch_lo < 0:
                landings.append(message(buf[rv.lo:rv.hi], rv.peer))
                continue
            landing = scratch[rv.scratch_lo:rv.scratch_lo + (rv.hi - rv.lo)]
            landings.append(message(landing, rv.peer))
            combines.append(Combine(op.ufunc if rv.reduce else None, buf[rv.lo:rv.hi], landing))
        steps.append(RankStep(step % TAGS_PER_WINDOW,
                              tuple(message(buf[snd.lo:snd.hi], snd.peer) for snd in sends),
                              tuple(landings), tuple(combines)))
    actions = tuple(a for st in steps for a in _blocking_actions(comm, st))
    return Run(buf, scratch, tuple(steps), actions, schedule)


def _schedule_for(schedule: ScheduleLike, p: int, n: int, opts: dict[str, Any]) -> Schedule:
    if not isinstance(schedule, Schedule):
        return schedule(p, n, **opts)
    if (schedule.p, schedule.n) != (p, n):
        raise UserError(f"schedule {schedule.name!r} is for p={schedule.p}, n={schedule.n} "
                        f"but the call has p={p}, n={n}")
    return schedule


# ---- the per-communicator state -----------------------------------------------------------------

class _LastCall(NamedTuple):
    buf: Any
    schedule: object
    op: object
    run: Run


class RunCache:
    """The compiled runs of one communicator, least recently used first, bounded by count and
    by bytes (buffers pinned plus scratch owned).

    Runs are found by the buffer's address, length and dtype, so a fresh view of memory already
    compiled for (the Bucketer slices its gradient buffer anew every step) reuses that run: the
    run's views keep the memory alive, so the address cannot be recycled while it is cached.
    The previous call is remembered by identity, which skips building the key in a training loop.
    """

    def __init__(self, max_runs: int = RUNS_PER_COMM, max_bytes: int = RUN_BYTES_PER_COMM) -> None:
        self.max_runs = max_runs
        self.max_bytes = max_bytes
        self._runs: OrderedDict[Hashable, Run] = OrderedDict()
        self._last: _LastCall | None = None

    def __len__(self) -> int:
        return len(self._runs)

    def get(self, comm: Any, buf: Any, schedule: ScheduleLike, op: Any,
            opts: dict[str, Any]) -> Run:
        """The run of `schedule` on buf (compiled on a miss; buf is validated unless it is the
        very object of the previous call)."""
        last = self._last
        if (last is not None and last.buf is buf and last.schedule is schedule
                and last.op is op and not opts):
            return last.run
        validate(buf)
        rop = op if isinstance(op, ReduceOp) else resolve_op(op)
        sched_key = id(schedule) if isinstance(schedule, Schedule) else schedule  # unhashable
        key = (buf.__array_interface__["data"][0], buf.shape[0], buf.dtype.char, sched_key,
               rop.name, tuple(sorted(opts.items())) if opts else ())
        run = self._runs.get(key)
        if run is None:
            sched = _schedule_for(schedule, comm.Get_size(), buf.shape[0], opts)
            run = compile_run(comm, sched, buf, rop)
            run.schedule = schedule
            self._runs[key] = run
            self._evict()
        else:
            self._runs.move_to_end(key)
        self._last = _LastCall(buf, schedule, op, run) if not opts else None
        return run

    def _evict(self) -> None:
        while len(self._runs) > self.max_runs or (
                len(self._runs) > 1
                and sum(r.nbytes for r in self._runs.values()) > self.max_bytes):
            self._runs.popitem(last=False)
        self._last = None


class CommState:
    """Everything the all-reduce code keeps about one communicator (an MPI attribute on it)."""

    def __init__(self) -> None:
        self.runs = RunCache()
        self.requests_started = 0  # picks each request's tag window; equal on every rank
        self.check_lengths = os.environ.get(CHECK_ENV, "") not in ("", "0")
        # hierarchical: ranks_per_node setting (None: shared-memory split) -> node id per rank
        self.node_maps: dict[int | None, tuple[int, ...]] = {}
        # hierarchical: DISTNET_RANKS_PER_NODE once every rank agreed on it ("" unset)
        self.ranks_per_node_env: str | None = None
        # hierarchical: node map -> (node communicator, leaders' or None, its ShmAllreduce)
        self.node_parts: dict[tuple[int, ...], tuple[Any, Any, Any]] = {}
        # auto: rank 0's tune table, race candidates and DISTNET_AUTO_RACE once agreed; per
        # message size the function it runs (or the Race still deciding it), its name, and the
        # decided race (for reports)
        self.auto_table: dict[int, list[tuple[int, str]]] | None = None
        self.auto_race: dict[int, list[tuple[int, tuple[str, ...]]]] | None = None
        self.auto_race_on = False
        self.auto_choices: dict[int, Any] = {}
        self.auto_names: dict[int, str] = {}
        self.auto_races: dict[int, Any] = {}
        # set by fault tolerance (ft/ulfm.py): auto must pick only algorithms a revoke can wake
        self.revocable_only = False


class _StateAttribute:
    """The MPI keyval under which every communicator carries its CommState (one per process,
    created on first use, since creating it needs MPI).

    The previous call's communicator is remembered by identity: an attribute lookup costs about
    a microsecond, as much as the rest of a small reduction's Python work. Free runs the
    keyval's delete callback, which forgets it, so a freed communicator's state is not kept.
    """

    def __init__(self) -> None:
        self._keyval: int | None = None
        self._last: tuple[Any, CommState] | None = None

    def of(self, comm: Any) -> CommState:
        last = self._last
        if last is not None and last[0] is comm:
            return last[1]
        if self._keyval is None:
            from mpi4py import MPI

            self._keyval = MPI.Comm.Create_keyval(delete_fn=self._forget)
        state = comm.Get_attr(self._keyval)
        if state is None:
            state = CommState()
            comm.Set_attr(self._keyval, state)
        self._last = (comm, state)
        return state

    def _forget(self, comm: Any, keyval: int, state: CommState) -> None:
        last = self._last
        if last is not None and last[1] is state:
            self._last = None
        # hierarchical's node parts die with their communicator. Free is collective over comm,
        # so every rank of every node communicator frees its window here, in the same order.
        for node, leaders, shm in state.node_parts.values():
            shm.close()
            node.Free()
            if leaders is not None:
                leaders.Free()
        state.node_parts.clear()


_STATE = _StateAttribute()


def comm_state(comm: Any) -> CommState:
    """comm's CommState (created empty on first use; a Dup starts empty, Free drops it)."""
    return _STATE.of(comm)


def set_length_check(comm: Any, enabled: bool) -> None:
    """Check that all ranks pass equal lengths before each call on comm (same on every rank)."""
    comm_state(comm).check_lengths = enabled


def check_lengths(comm: Any, n: int) -> None:
    """Collective: UserError on every rank if the ranks' buffer lengths differ."""
    from mpi4py import MPI

    both = np.array([n, -n], dtype=np.int64)
    comm.Allreduce(MPI.IN_PLACE, both, op=MPI.MAX)
    if both[0] != -both[1]:
        raise UserError(
            f"all-reduce buffer lengths differ across ranks ({-both[1]}..{both[0]} elements)")


# ---- run ----------------------------------------------------------------------------------------

def execute(comm: Any, buf: np.ndarray, schedule: ScheduleLike, op: Any = SUM,
            **opts: Any) -> None:
    """Run this rank's part of `schedule` on buf, in place; returns when the rank is done.

    `opts` go to the schedule builder (and key the cache); a Schedule object must have been
    built for exactly this communicator's size and len(buf).
    """
    state = comm_state(comm)
    run = state.runs.get(comm, buf, schedule, op, opts)
    if state.check_lengths:
        check_lengths(comm, buf.shape[0])
    for action in run.actions:
        action()


StepLog = list[tuple[int, float, float]]  # (step, posted, seen done) perf_counter times


class AllreduceRequest(Protocol):
    """A reduction in flight: `test` advances it without blocking, `wait` completes it.

    Set `step_log` to a list to have a schedule's step times appended to it (tracing); a request
    without schedule steps leaves it empty.
    """

    step_log: StepLog | None

    def test(self) -> bool: ...

    def wait(self) -> None: ...


class ScheduleRequest:
    """A schedule run in flight, step by step: `test` advances it without blocking, `wait`
    finishes it."""

    def __init__(self, comm: Any, steps: tuple[RankStep, ...], tag_base: int) -> None:
        self._comm = comm
        self._steps = steps
        self._tag_base = tag_base
        self._next = 0  # the step posted (or to be posted) next
        self._reqs: list[Any] | None = None  # its MPI requests once posted
        self._posted_s = 0.0
        self.step_log: StepLog | None = None  # see AllreduceRequest

    @property
    def done(self) -> bool:
        return self._next >= len(self._steps)

    def _posted(self) -> list[Any]:
        if self._reqs is None:
            st = self._steps[self._next]
            if self.step_log is not None:
                self._posted_s = time.perf_counter()
            self._reqs = _exchange(self._comm, st, self._tag_base + st.tag)
        return self._reqs

    def _finish_step(self) -> None:
        if self.step_log is not None:
            self.step_log.append((self._next, self._posted_s, time.perf_counter()))
        for combine in self._steps[self._next].combines:
            combine.apply()
        self._next += 1
        self._reqs = None

    def test(self) -> bool:
        """Post and complete as many steps as possible without blocking; True when finished."""
        from mpi4py import MPI

        while self._next < len(self._steps):
            if not MPI.Request.Testall(self._posted()):
                return False
            self._finish_step()
        return True

    def wait(self) -> None:
        """Block until every step has completed."""
        from mpi4py import MPI

        while self._next < len(self._steps):
            MPI.Request.Waitall(self._posted())
            self._finish_step()


class CompletedRequest:
    """A reduction that already ran to completion (algorithms without a non-blocking form)."""

    def __init__(self) -> None:
        self.step_log: StepLog | None = None

    def test(self) -> bool:
        return True

    def wait(self) -> None:
        return None


def start_schedule(comm: Any, buf: np.ndarray, schedule: ScheduleLike, op: Any = SUM,
                   **opts: Any) -> ScheduleRequest:
    """Begin running `schedule` on buf; nothing blocks until `wait`."""
    state = comm_state(comm)
    run = state.runs.get(comm, buf, schedule, op, opts)
    if state.check_lengths:
        check_lengths(comm, buf.shape[0])
    window = 1 + state.requests_started % REQUEST_WINDOWS
    state.requests_started += 1
    request = ScheduleRequest(comm, run.steps, window * TAGS_PER_WINDOW)
    request.test()  # post the first step now so that peers can make progress
    return request


def start(comm: Any, buf: np.ndarray, name: str, op: Any = SUM) -> AllreduceRequest:
    """Begin all-reducing buf in place with registered algorithm `name`; returns a request.

    The request has ``test() -> bool`` (advance without blocking, True when finished) and
    ``wait()``. Start requests in the same order on every rank, at most 63 in flight per
    communicator, and never two on the same buffer at once.
    """
    rop = resolve_op(op)
    validate(buf)
    starter = STARTERS.get(name)
    if starter is not None:
        return starter(comm, buf, rop)
    if name in SCHEDULES:
        return start_schedule(comm, buf, SCHEDULES[name], rop)
    get(name)(comm, buf, op=rop)  # no non-blocking form: run it now
    return CompletedRequest()

"""Communication schedules as plain data: one definition, two interpreters.

An all-reduce algorithm is written once as a `Schedule`: a sequence of steps, each a set of
transfers (sender, receiver, chunk offset, chunk length, reduce-or-copy). The MPI executor
(`distnet.allreduce.mpi`) runs it on real buffers, `topology.sim` replays it on a modelled
network, and the unit tests count it. This module is pure NumPy and never imports MPI, so the
simulator can build schedules for 27,648 ranks without an MPI runtime.

Semantics of one step (what both interpreters rely on):
- every send reads the sender's buffer as it was *before* the step;
- a transfer with ``reduce=True`` combines the received chunk into the receiver's buffer with the
  reduction op; ``reduce=False`` overwrites it;
- several transfers into the same rank are applied in array order, so the reduction order is
  fixed and every rank ends with bitwise-identical results;
- rank r may start step s once all of r's transfers in steps < s are complete (per-rank
  dependencies, not a global barrier): a rank absent from a step does not wait for it.

Large schedules (ring on 27,648 ranks has 55,294 steps of 27,648 transfers) are never
materialised: a schedule produces its steps on demand, and `pattern(s)` tells the simulator which
steps move the same (src, dst, count) multiset so it can reuse a solved step.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Step:
    """Transfers that run concurrently. All arrays have shape (m,)."""

    src: np.ndarray  # int64 sender rank
    dst: np.ndarray  # int64 receiver rank
    offset: np.ndarray  # int64 first element of the chunk
    count: np.ndarray  # int64 number of elements
    reduce: np.ndarray  # bool: True combine with op, False overwrite

    def __len__(self) -> int:
        return int(self.src.shape[0])


def make_step(
    src: object, dst: object, offset: object, count: object, reduce: object
) -> Step:
    """Build a Step from sequences or scalars; scalars broadcast to the common length."""
    arrays = np.broadcast_arrays(
        np.asarray(src, dtype=np.int64),
        np.asarray(dst, dtype=np.int64),
        np.asarray(offset, dtype=np.int64),
        np.asarray(count, dtype=np.int64),
        np.asarray(reduce, dtype=bool),
    )
    src_a, dst_a, off_a, cnt_a, red_a = (np.ascontiguousarray(a).reshape(-1) for a in arrays)
    return Step(src_a, dst_a, off_a, cnt_a, red_a)


EMPTY_STEP = make_step([], [], [], [], [])


@dataclass(frozen=True)
class Schedule:
    """An all-reduce over `p` ranks of a buffer of `n` elements, as `nsteps` steps.

    `step_fn(s)` returns step s; `pattern_fn(s)`, when given, returns a hashable key such that
    two steps with equal keys move the same multiset of (src, dst, count) — the simulator's
    licence to reuse a solved step instead of solving it again.
    """

    name: str
    p: int
    n: int
    nsteps: int
    step_fn: Callable[[int], Step]
    pattern_fn: Callable[[int], Hashable] | None = None
    meta: dict[str, object] = field(default_factory=dict)

    def step(self, s: int) -> Step:
        if not 0 <= s < self.nsteps:
            raise IndexError(f"step {s} out of range 0..{self.nsteps - 1}")
        return self.step_fn(s)

    def steps(self) -> Iterator[Step]:
        for s in range(self.nsteps):
            yield self.step_fn(s)

    def pattern(self, s: int) -> Hashable:
        """Key of step s; without a pattern_fn every step is its own pattern."""
        return self.pattern_fn(s) if self.pattern_fn is not None else ("step", s)


def from_steps(name: str, p: int, n: int, steps: list[Step], **meta: object) -> Schedule:
    """A schedule from an explicit list of steps (fine for small p; tests and custom schedules)."""
    frozen = list(steps)
    return Schedule(name, p, n, len(frozen), frozen.__getitem__, None, dict(meta))


def chunk_bounds(n: int, parts: int) -> np.ndarray:
    """Offsets of `parts` near-equal chunks of n elements: the first n % parts get one more.

    Returns an int64 array of length parts + 1 with bounds[0] = 0 and bounds[-1] = n, so chunk i
    is [bounds[i], bounds[i+1]) with ⌈n/parts⌉ or ⌊n/parts⌋ elements (possibly 0 when n < parts).
    """
    base, extra = divmod(n, parts)
    sizes = np.full(parts, base, dtype=np.int64)
    sizes[:extra] += 1
    bounds = np.zeros(parts + 1, dtype=np.int64)
    np.cumsum(sizes, out=bounds[1:])
    return bounds


def per_rank_bytes_sent(schedule: Schedule, itemsize: int) -> np.ndarray:
    """Bytes each rank sends over the whole schedule (for tests against the cost formula)."""
    sent = np.zeros(schedule.p, dtype=np.int64)
    for st in schedule.steps():
        np.add.at(sent, st.src, st.count * itemsize)
    return sent


def simulate_sum(schedule: Schedule, inputs: np.ndarray) -> np.ndarray:
    """Run a schedule on a (p, n) array in one process with op=SUM: the reference interpreter.

    Used by unit tests to prove a schedule is a correct all-reduce without MPI.
    """
    bufs = np.array(inputs, copy=True)
    for st in schedule.steps():
        before = bufs.copy()
        for i in range(len(st)):
            lo, hi = int(st.offset[i]), int(st.offset[i] + st.count[i])
            chunk = before[st.src[i], lo:hi]
            if st.reduce[i]:
                bufs[st.dst[i], lo:hi] += chunk
            else:
                bufs[st.dst[i], lo:hi] = chunk
    return bufs


def lockstep_counts(schedule: Schedule, itemsize: int) -> tuple[int, int, int]:
    """(steps, bytes, reduced bytes) of the schedule as the cost model counts them.

    Steps that move anything; per step, the bytes through the busiest rank's port (the larger of
    what it sends and what it receives) and the bytes the busiest rank reduces, summed over the
    steps. It is the critical path if ranks move in lockstep (`distnet.allreduce.cost`).
    """
    steps = total = reduced = 0
    for st in schedule.steps():
        live = st.count > 0
        if not live.any():
            continue
        nbytes = st.count * itemsize
        port = max(np.bincount(st.src, nbytes, schedule.p).max(),
                   np.bincount(st.dst, nbytes, schedule.p).max())
        steps += 1
        total += int(port)
        reduced += int(np.bincount(st.dst, nbytes * st.reduce, schedule.p).max())
    return steps, total, reduced

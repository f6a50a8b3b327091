"""`auto`'s race: the tune's near candidates timed against each other on the run's own buffer.

A tune measures other buffers at another moment, and on a shared machine the order of
near-equal algorithms at one size moves with both: with two ranks at 1 MiB, `shm` was 0.85x the
rings in two tune passes and 1.05x in the third, each pass's eight rounds within a few percent
of each other (README, "`auto` in a run after the tune run"). A pick made in the tune run is
then the best of a different moment. So, as STAR-MPI does (Faraj, Yuan and Lowenthal, ICS
2006: tune each collective's algorithm during the application's own first calls), `auto`
spends its first calls at a size on a communicator timing the candidates the tune kept (those
whose tune score is within RACE_SCORE of the pick's, at most RACE_MAX), and keeps the fastest
for the rest of the run.

How it times them. Each candidate runs in blocks (WARM untimed calls, then timed ones):
alternating call by call timed every algorithm just after another one had left its own data
in the caches and a different state in MPI, which is not how the winner will run (at 4 KiB,
p = 2, that race picked a ring 1.12x behind `shm`). The candidates take PASSES turns, so load
that drifts during the race meets each of them more than once (at 32 MiB one block of three
calls saw ring_pipelined 27 % slower than it ran for the rest of the run). The tune's order
breaks near-ties: the winner is the first candidate, in the tune's order, whose median is
within RACE_MARGIN of the fastest; what the tune saw over several passes outweighs a few
percent in one short race.

Every call is one complete all-reduce by one candidate, the same candidate on every rank: it
follows from the call count, and ranks call a collective with the same sizes in the same order.
So each result is correct and bitwise identical across ranks. The decision is one more
all-reduce of k floats, each rank's median time per candidate, max over ranks (a collective is
as slow as its slowest rank); every rank then applies the same rule to the same numbers.

Cost: k·PASSES·WARM + k·timed_calls(n) calls of the k candidates and one k-float all-reduce,
once per (communicator, size); afterwards that of the winner. The price: which algorithm runs,
and so the rounding of a float sum, can differ from one run to the next (DISTNET_AUTO_RACE=0
keeps the tune's pick, as the trainer's bucketed path always does).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

# Candidates: tune score (median over passes of time / the pass's fastest) within this factor
# of the pick's. Wide, because a pick 1.6x behind the rings in one run was first in the next.
RACE_SCORE = 2.0
RACE_MAX = 4
RACE_MARGIN = 0.05
PASSES = 2
WARM = 1  # untimed calls per block: its first call pays for caches and its scratch pages
# Timed calls per candidate, over all passes: more where a call is cheap and noisy.
MIN_TIMED = 4
MAX_TIMED = 48
TIMED_BYTES = 8 << 20


def timed_calls(nbytes: int) -> int:
    """Timed calls per candidate for an nbytes message, a multiple of PASSES: 48 up to
    128 KiB (a call there is tens of microseconds and its time jumps by 20 % from call to call
    with four ranks on two cores: 16 picked a candidate 1.23x behind at 8 B and 256 B), down
    to 4 from 2 MiB."""
    n = max(MIN_TIMED, min(MAX_TIMED, TIMED_BYTES // max(nbytes, 1)))
    return n // PASSES * PASSES


def winner(medians_s: list[float], margin: float = RACE_MARGIN) -> int:
    """The first candidate (the tune's order) within `margin` of the fastest median."""
    fastest = min(medians_s)
    return next(i for i, m in enumerate(medians_s) if m <= fastest * (1 + margin))


class Race:
    """The race at one (communicator, size): call `step` for each all-reduce until it returns
    the winner's index."""

    def __init__(self, names: tuple[str, ...], fns: tuple[Callable[..., None], ...],
                 nbytes: int) -> None:
        if len(names) != len(fns) or len(names) < 2:
            raise ValueError("a race needs two or more candidates, one function each")
        self.names = names
        self.fns = fns
        self.timed = timed_calls(nbytes)
        block = [False] * WARM + [True] * (self.timed // PASSES)
        # (candidate, timed?) for each call of the race, the same on every rank
        self.plan = [(i, t) for _ in range(PASSES) for i in range(len(fns)) for t in block]
        self.calls = 0
        self.times: list[list[float]] = [[] for _ in fns]
        self.medians_s: list[float] = []  # max over ranks, once decided

    def step(self, comm: Any, buf: Any, op: Any = None) -> int | None:
        """Reduce buf with the next candidate; the winner's index once the race is decided."""
        i, timed = self.plan[self.calls]
        fn = self.fns[i]
        t0 = time.perf_counter()
        if op is None:
            fn(comm, buf)
        else:
            fn(comm, buf, op=op)
        elapsed_s = time.perf_counter() - t0
        if timed:
            self.times[i].append(elapsed_s)
        self.calls += 1
        if self.calls < len(self.plan):
            return None
        return self._decide(comm)

    def _decide(self, comm: Any) -> int:
        from mpi4py import MPI

        med = np.array([np.median(t) for t in self.times], dtype=np.float64)
        comm.Allreduce(MPI.IN_PLACE, med, op=MPI.MAX)
        self.medians_s = med.tolist()
        return winner(self.medians_s)

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
that drifts during the race meets each of them several times (at 32 MiB one block of three
calls saw ring_pipelined 27 % slower than it ran for the rest of the run).

How it decides. The tune's pick stays unless another candidate beat it by more than
RACE_MARGIN in every pass; of those that did, the one with the lowest total over the passes
wins. What the tune saw over several passes outweighs a short race that does not agree with
itself: with two passes and "the first in the tune's order within RACE_MARGIN of the fastest
median", the race left a recursive doubling that was the best in the rounds after it for a
tree 1.26x behind (p = 2, 256 B) on a 7 % lead pooled over the passes, while the switches
that paid (from `shm` 1.2-1.5x behind the rings at 128 KiB - 2 MiB) led by far more.

Every call is one complete all-reduce by one candidate, the same candidate on every rank: it
follows from the call count, and ranks call a collective with the same sizes in the same order.
So each result is correct and bitwise identical across ranks. The decision is one more
all-reduce, each rank's median time per candidate and pass, max over ranks (a collective is as
slow as its slowest rank); every rank then applies the same rule to the same numbers.

Cost: k·PASSES·WARM + k·timed_calls(n) calls of the k candidates and one all-reduce of
k·PASSES floats, once per (communicator, size); afterwards that of the winner. The price:
which algorithm runs, and so the rounding of a float sum, can differ from one run to the next
(DISTNET_AUTO_RACE=0 keeps the tune's pick, as the trainer's bucketed path always does).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

# Candidates: tune score (median over passes of time / the pass's fastest) within this factor
# of the pick's. Wide, because a pick 1.6x behind the rings in one run was first in the next.
RACE_SCORE = 2.0
# Six, not four: at 128 KiB - 4 MiB (p = 2) the four best in a tune were often the rings,
# Rabenseifner and native, near-equal transport algorithms, and `shm`, fifth or sixth there,
# was 1.17-1.40x faster than all four in the run after it.
RACE_MAX = 6
RACE_MARGIN = 0.05
PASSES = 4
WARM = 1  # untimed calls per block: its first call pays for caches and its scratch pages
# Timed calls per candidate, over all passes: more where a call is cheap and noisy, and two per
# pass at least, so that no pass's median is a single call.
MIN_TIMED = 2 * PASSES
MAX_TIMED = 48
TIMED_BYTES = 8 << 20


def timed_calls(nbytes: int) -> int:
    """Timed calls per candidate for an nbytes message, a multiple of PASSES: 48 up to
    128 KiB (a call there is tens of microseconds and its time jumps by 20 % from call to call
    with four ranks on two cores: 16 picked a candidate 1.23x behind at 8 B and 256 B), down
    to MIN_TIMED from 1 MiB."""
    n = max(MIN_TIMED, min(MAX_TIMED, TIMED_BYTES // max(nbytes, 1)))
    return n // PASSES * PASSES


def winner(pass_medians_s: list[list[float]], margin: float = RACE_MARGIN) -> int:
    """The race's winner from pass_medians_s[j][i], candidate i's median in pass j (candidate
    0 is the tune's pick): the pick, unless some candidate was more than `margin` faster than
    it in every pass; then, of those, the one with the lowest total (ties: the tune's order)."""
    k = len(pass_medians_s[0])
    beat = [i for i in range(1, k) if all(m[i] * (1 + margin) < m[0] for m in pass_medians_s)]
    return min(beat, key=lambda i: (sum(m[i] for m in pass_medians_s), i)) if beat else 0


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
        # (pass, candidate, timed?) for each call of the race, the same on every rank
        self.plan = [(j, i, t) for j in range(PASSES) for i in range(len(fns)) for t in block]
        self.calls = 0
        self.times: list[list[list[float]]] = [[[] for _ in range(PASSES)] for _ in fns]
        self.pass_medians_s: list[list[float]] = []  # [pass][candidate], max over ranks
        self.medians_s: list[float] = []  # per candidate, the median over its passes

    def step(self, comm: Any, buf: Any, op: Any = None) -> int | None:
        """Reduce buf with the next candidate; the winner's index once the race is decided."""
        j, i, timed = self.plan[self.calls]
        fn = self.fns[i]
        t0 = time.perf_counter()
        if op is None:
            fn(comm, buf)
        else:
            fn(comm, buf, op=op)
        elapsed_s = time.perf_counter() - t0
        if timed:
            self.times[i][j].append(elapsed_s)
        self.calls += 1
        if self.calls < len(self.plan):
            return None
        return self._decide(comm)

    def _decide(self, comm: Any) -> int:
        from mpi4py import MPI

        med = np.array([[np.median(self.times[i][j]) for i in range(len(self.fns))]
                        for j in range(PASSES)], dtype=np.float64)
        comm.Allreduce(MPI.IN_PLACE, med, op=MPI.MAX)
        self.pass_medians_s = med.tolist()
        self.medians_s = np.median(med, axis=0).tolist()
        return winner(self.pass_medians_s)

"""Naive all-reduce: everyone sends the whole buffer to rank 0, which reduces and sends it back.

Rank 0 adds the contributions in rank order 1, 2, …, p−1 (a fixed order), then copies the result
to every rank, so all ranks end bitwise identical. The baseline the others must beat.

Cost (α per step, β per byte, γ per reduced byte, n bytes, p ranks), root-bound: rank 0's
p−1 receives of a step overlap, but its port carries (p−1)n bytes each way and it reduces them
one after another:
    2α + 2(p−1)nβ + (p−1)nγ
"""

from __future__ import annotations

from typing import Any

import numpy as np

from distnet.allreduce.mpi import execute
from distnet.allreduce.ops import SUM
from distnet.allreduce.schedule import EMPTY_STEP, Schedule, Step, make_step


def naive_schedule(p: int, n: int, **_: Any) -> Schedule:
    """Step 0: ranks 1..p−1 send to 0 (reduce, in rank order); step 1: 0 sends to all (copy)."""
    others = np.arange(1, p, dtype=np.int64)

    def step(s: int) -> Step:
        if p == 1:
            return EMPTY_STEP
        if s == 0:
            return make_step(others, 0, 0, n, True)
        return make_step(0, others, 0, n, False)

    return Schedule("naive", p, n, 2 if p > 1 else 0, step, None, {})


def naive_allreduce(comm: Any, buf: np.ndarray, op: Any = SUM) -> None:
    """Gather-reduce at rank 0 then send back: 2α + 2(p−1)nβ + (p−1)nγ."""
    execute(comm, buf, naive_schedule, op)

"""Recursive doubling: log2 p rounds of whole-buffer exchanges with partner r XOR 2^k.

Latency-optimal for small buffers. For p not a power of two, with q = 2^⌊log2 p⌋, the extra
ranks q..p−1 first fold their buffer into rank r − q, sit out the exchanges, and get the result
back at the end. Both partners of an exchange compute a ⊕ b and b ⊕ a, which are bitwise equal
for the commutative ops we support, so every rank ends identical.

Cost (α per message, β per byte, γ per reduced byte, n bytes, p ranks, q = 2^⌊log2 p⌋, e = 1 if
p ≠ q else 0):
    (log2 q + 2e)α + (log2 q + 2e)nβ + (log2 q + e)nγ
"""

from __future__ import annotations

from typing import Any

import numpy as np

from distnet.allreduce.mpi import execute
from distnet.allreduce.ops import SUM
from distnet.allreduce.schedule import Schedule, Step, make_step


def fold_layout(p: int) -> tuple[int, int]:
    """(q, extra): q = largest power of two ≤ p, extra = p − q ranks folded into 0..extra−1."""
    q = 1 << (p.bit_length() - 1)
    return q, p - q


def recursive_doubling_schedule(p: int, n: int, **_: Any) -> Schedule:
    """[fold], log2 q exchange rounds, [unfold]: whole-buffer transfers, O(p) per step."""
    q, extra = fold_layout(p)
    rounds = q.bit_length() - 1
    lead = 1 if extra else 0
    core = np.arange(q, dtype=np.int64)
    folded = np.arange(q, p, dtype=np.int64)

    def step(s: int) -> Step:
        if extra and s == 0:
            return make_step(folded, folded - q, 0, n, True)
        if extra and s == lead + rounds:
            return make_step(folded - q, folded, 0, n, False)
        return make_step(core, core ^ (1 << (s - lead)), 0, n, True)

    return Schedule("recursive_doubling", p, n, rounds + 2 * lead, step, None, {"q": q})


def recursive_doubling_allreduce(comm: Any, buf: np.ndarray, op: Any = SUM) -> None:
    """Recursive-doubling all-reduce: (log2 q + 2e)(α + nβ) + (log2 q + e)nγ."""
    execute(comm, buf, recursive_doubling_schedule, op)

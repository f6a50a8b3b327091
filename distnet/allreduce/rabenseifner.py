"""Rabenseifner: recursive-halving reduce-scatter, then recursive-doubling all-gather.

With q = 2^⌊log2 p⌋ core ranks the buffer is cut into q chunks (`chunk_bounds`, so any n works).
Halving round k pairs r with r XOR q/2^(k+1): each keeps the half of its current chunk range on
its side of that bit and sends the other half to be reduced there, so after log2 q rounds rank r
owns the finished chunk r. The all-gather retraces the rounds backwards, copying. Extra ranks
(p − q of them) fold in first and get the result last, as in recursive doubling. Every chunk is
reduced once, at one rank, then copied: all ranks end bitwise identical.

Cost (α per message, β per byte, γ per reduced byte, n bytes, e = 1 if p ≠ q else 0):
    (2 log2 q + 2e)α + (2((q−1)/q) + 2e)nβ + ((q−1)/q + e)nγ
"""

from __future__ import annotations

from typing import Any

import numpy as np

from distnet.allreduce.mpi import execute
from distnet.allreduce.ops import SUM
from distnet.allreduce.recursive_doubling import fold_layout
from distnet.allreduce.schedule import Schedule, Step, chunk_bounds, make_step


def rabenseifner_schedule(p: int, n: int, **_: Any) -> Schedule:
    """[fold], log2 q halving rounds, log2 q doubling rounds, [unfold]; O(p) per step."""
    q, extra = fold_layout(p)
    rounds = q.bit_length() - 1
    lead = 1 if extra else 0
    bounds = chunk_bounds(n, q)
    core = np.arange(q, dtype=np.int64)
    folded = np.arange(q, p, dtype=np.int64)

    def step(s: int) -> Step:
        if extra and s == 0:
            return make_step(folded, folded - q, 0, n, True)
        if extra and s == lead + 2 * rounds:
            return make_step(folded - q, folded, 0, n, False)
        k = s - lead
        if k < rounds:
            # Halving round k: block of q/2^k chunks holding r; the partner across bit `half`
            # keeps the other half, so r sends that half (the block half containing the partner).
            half = q >> (k + 1)
            partner = core ^ half
            lo_chunk = partner & ~(half - 1)
            return make_step(core, partner, bounds[lo_chunk],
                             bounds[lo_chunk + half] - bounds[lo_chunk], True)
        # Doubling round: r owns the aligned block of `size` chunks containing r; send it across.
        size = 1 << (k - rounds)
        partner = core ^ size
        lo_chunk = core & ~(size - 1)
        return make_step(core, partner, bounds[lo_chunk],
                         bounds[lo_chunk + size] - bounds[lo_chunk], False)

    return Schedule("rabenseifner", p, n, 2 * rounds + 2 * lead, step, None, {"q": q})


def rabenseifner_allreduce(comm: Any, buf: np.ndarray, op: Any = SUM) -> None:
    """Halving reduce-scatter + doubling all-gather: 2 log2 q α + 2((q−1)/q)nβ + ((q−1)/q)nγ."""
    execute(comm, buf, rabenseifner_schedule, op)

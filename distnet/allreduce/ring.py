"""Ring all-reduce: reduce-scatter then all-gather around the ring r -> r+1 (Patarasuk & Yuan).

The buffer is cut into p near-equal chunks (`chunk_bounds`). In reduce-scatter step s rank r
sends chunk (r − s) mod p to r + 1, which adds it to its own copy; after p − 1 steps rank r holds
the finished chunk (r + 1) mod p. The all-gather then passes finished chunks on for p − 1 more
steps, overwriting. Every chunk is reduced in one fixed order around the ring and then copied,
so all ranks end bitwise identical.

Cost (α per message, β per byte, γ per reduced byte, n bytes, p ranks):
    2(p−1)α + 2((p−1)/p)nβ + ((p−1)/p)nγ
— bandwidth-optimal, but its latency term grows with p.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

import numpy as np

from distnet.allreduce.execute import execute
from distnet.allreduce.ops import SUM
from distnet.allreduce.schedule import Schedule, Step, chunk_bounds

PIPELINE_SEGMENT_BYTES = 1 << 20  # fits L2 (2 MiB here); 256 KiB segments measured slower


def ring_step_fn(members: np.ndarray, n: int) -> Callable[[int], Step]:
    """Step s of the ring among `members` (rank ids, ring order), as a function of s.

    Steps 0..m−2 are the reduce-scatter (member i sends chunk (i − s) mod m to member i + 1),
    m−1..2m−3 the all-gather (chunk (i + 1 − s′) mod m, s′ = s − (m − 1)). Shared with
    `hierarchical`, which runs this ring among node leaders.

    The chunk geometry is computed once: offsets and counts of the chunks laid out twice, so the
    chunks of step s are the slice starting at (−shift) mod m — a view, no per-step arithmetic.
    The simulator asks for all 55,294 steps of a 27,648-rank ring, so this matters.
    """
    m = members.shape[0]
    bounds = chunk_bounds(n, m)
    offsets2 = np.tile(bounds[:-1], 2)
    counts2 = np.tile(np.diff(bounds), 2)
    dst = np.roll(members, -1)
    reduce_true, reduce_false = np.ones(m, dtype=bool), np.zeros(m, dtype=bool)
    for shared in (members, offsets2, counts2, dst, reduce_true, reduce_false):
        shared.flags.writeable = False  # every step hands out views of these: nobody may write

    def step(s: int) -> Step:
        shift, reduce = (s, reduce_true) if s < m - 1 else (s - m, reduce_false)
        lo = (-shift) % m
        return Step(members, dst, offsets2[lo:lo + m], counts2[lo:lo + m], reduce)

    return step


def ring_schedule(p: int, n: int, **_: Any) -> Schedule:
    """The ring as a Schedule: 2(p−1) steps of one transfer per rank, built on demand."""
    nsteps = 2 * (p - 1) if p > 1 else 0
    step = ring_step_fn(np.arange(p, dtype=np.int64), n)

    def pattern(s: int) -> Hashable:
        # Step s sends chunk (r − shift) from every r; only the shift mod p changes the
        # (src, dst, count) multiset, and not even that when every chunk has the same size.
        if n % p == 0:
            return ("ring", p, n)
        shift = s if s < p - 1 else s - p
        return ("ring", p, n, shift % p)

    return Schedule("ring", p, n, nsteps, step, pattern, {"chunks": p})


def ring_allreduce(comm: Any, buf: np.ndarray, op: Any = SUM) -> None:
    """Ring all-reduce of buf in place: 2(p−1)α + 2((p−1)/p)nβ + ((p−1)/p)nγ."""
    execute(comm, buf, ring_schedule, op)


def ring_pipelined_allreduce(comm: Any, buf: np.ndarray, op: Any = SUM) -> None:
    """The ring with every chunk sent in PIPELINE_SEGMENT_BYTES segments, each reduced on arrival.

    Same wire traffic as the ring; ⌈chunk/segment⌉ times more messages, so with S segments per
    chunk: 2(p−1)Sα + 2((p−1)/p)nβ + ((p−1)/p)nγ, traded for reducing cache-hot segments.
    """
    execute(comm, buf, ring_schedule, op, segment_bytes=PIPELINE_SEGMENT_BYTES)

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

from distnet.allreduce.mpi import execute
from distnet.allreduce.ops import SUM
from distnet.allreduce.schedule import Schedule, Step, chunk_bounds
from distnet.common.errors import UserError

# 1 MiB of float32 per segment: fits L2 (2 MiB here); 256 KiB segments measured slower.
PIPELINE_SEGMENT_ELEMS = 1 << 18


def ring_step_fn(members: np.ndarray, n: int) -> Callable[[int], Step]:
    """Step s of the ring among `members` (rank ids, ring order), as a function of s.

    Steps 0..m−2 are the reduce-scatter (member i sends chunk (i − s) mod m to member i + 1),
    m−1..2m−3 the all-gather (chunk (i + 1 − s′) mod m, s′ = s − (m − 1)). Shared with
    `hierarchical`, which runs this ring among node leaders.
    """
    bounds = chunk_bounds(n, members.shape[0])
    return _ring_step_fn(members, bounds[:-1], np.diff(bounds))


def _ring_step_fn(members: np.ndarray, offsets: np.ndarray, counts: np.ndarray
                  ) -> Callable[[int], Step]:
    """The ring's steps with chunk c = [offsets[c], offsets[c] + counts[c]).

    The chunk geometry is laid out twice, so the chunks of step s are the slice starting at
    (−shift) mod m — a view, no per-step arithmetic. The simulator asks for all 55,294 steps of
    a 27,648-rank ring, so this matters.
    """
    m = members.shape[0]
    offsets2 = np.tile(offsets, 2)
    counts2 = np.tile(counts, 2)
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


def ring_pipelined_schedule(p: int, n: int, segment_elems: int = PIPELINE_SEGMENT_ELEMS,
                            **_: Any) -> Schedule:
    """The ring with every chunk sent as S segments, one step each: 2(p−1)S steps.

    Ring step s becomes steps sS … sS + S − 1; step sS + k moves segment k of every rank's
    chunk of ring step s (each chunk cut by `chunk_bounds` into S near-equal segments,
    S = ⌈⌈n/p⌉ / segment_elems⌉). Segment k of a chunk is sent on as soon as it has been
    received and reduced, while it is still in cache, instead of after the whole chunk.
    """
    if segment_elems < 1:
        raise UserError(f"segment_elems must be >= 1, got {segment_elems}")
    nsteps_ring = 2 * (p - 1) if p > 1 else 0
    bounds = chunk_bounds(n, p)
    counts = np.diff(bounds)
    nseg = max(1, -(-int(counts.max(initial=0)) // segment_elems))
    # segment k of chunk c starts at bounds[c] + k·⌊count/S⌋ + min(k, count mod S)
    k = np.arange(nseg + 1, dtype=np.int64)[:, None]
    base, extra = np.divmod(counts, nseg)
    seg_bounds = bounds[:-1] + k * base + np.minimum(k, extra)  # (S + 1, p)
    members = np.arange(p, dtype=np.int64)
    per_segment = [_ring_step_fn(members, seg_bounds[j], seg_bounds[j + 1] - seg_bounds[j])
                   for j in range(nseg)]

    def step(t: int) -> Step:
        s, j = divmod(t, nseg)
        return per_segment[j](s)

    def pattern(t: int) -> Hashable:
        s, j = divmod(t, nseg)
        if n % p == 0:  # equal chunks: only the segment index changes the multiset
            return ("ring_pipelined", p, n, nseg, j)
        shift = s if s < p - 1 else s - p
        return ("ring_pipelined", p, n, nseg, j, shift % p)

    return Schedule("ring_pipelined", p, n, nsteps_ring * nseg, step, pattern,
                    {"chunks": p, "segments": nseg})


def ring_allreduce(comm: Any, buf: np.ndarray, op: Any = SUM) -> None:
    """Ring all-reduce of buf in place: 2(p−1)α + 2((p−1)/p)nβ + ((p−1)/p)nγ."""
    execute(comm, buf, ring_schedule, op)


def ring_pipelined_allreduce(comm: Any, buf: np.ndarray, op: Any = SUM) -> None:
    """The ring in S segments per chunk: 2(p−1)Sα + 2((p−1)/p)nβ + ((p−1)/p)nγ.

    Same wire traffic as the ring, S times more messages, traded for reducing cache-hot segments.
    """
    execute(comm, buf, ring_pipelined_schedule, op)

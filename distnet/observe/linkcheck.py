"""Network stragglers: a rank whose every link is slow, found by measuring the links.

Arrival blame (straggler.py) finds the rank that is late *to* the reduction. A slow cable does
not make anyone late: every rank arrives on time and then the whole reduction crawls at the
pace of the slowest link, the same for all ranks (a ring or a tree moves in lockstep), so no
timing inside a step says whose link it is. So the run watches its reduction times
(`ReduceLog`); if they grew several-fold since the start of the run on any rank, the ranks
measure their links at the end of the run: every pair of ranks swaps a message larger than a
shaper's burst (round-robin pairing, p - 1 rounds, each link once), and rank 0 judges.

A rank is blamed when even its fastest link is FACTOR times slower than the median rank's
fastest link: a slow cable at a host slows all of that host's links, a slow core link only some
of them (and two ranks alone cannot tell whose end is slow, so nobody is blamed).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

LINK_BYTES = 256 << 10  # above the emulator's 128 KiB tbf burst, so a rate cut shows
REPEATS = 2
TAG = 7021
WINDOW = 5  # steps at the start (after the first) and at the end that are compared
SLOW_FACTOR = 3.0  # reduction times this much longer than at the start: measure the links
SLOW_MIN_EXTRA_S = 0.01
FACTOR = 4.0
MIN_EXTRA_S = 5e-3


class ReduceLog:
    """This rank's reduction time per step (local, a float per step)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def add(self, seconds: float) -> None:
        self.times.append(seconds)

    def slowed_down(self) -> bool:
        """The last steps' reductions took far longer than the first steps' (step 0, which
        opens the connections, left out)."""
        t = self.times
        if len(t) < 2 * WINDOW + 1:
            return False
        start, end = statistics.median(t[1:1 + WINDOW]), statistics.median(t[-WINDOW:])
        return end > SLOW_FACTOR * start and end - start > SLOW_MIN_EXTRA_S


def partner(rank: int, rnd: int, size: int) -> int | None:
    """Round-robin (circle method) pairing: rank's peer in round rnd of size - 1 (or size,
    when odd: everyone sits one round out), every pair exactly once."""
    m = size + size % 2
    if rank == m - 1:
        peer = rnd
    elif rank == rnd:
        peer = m - 1
    else:
        peer = (2 * rnd - rank) % (m - 1)
    return None if peer >= size else peer


def measure(comm: Any, nbytes: int = LINK_BYTES, repeats: int = REPEATS) -> dict[int, float]:
    """Collective: seconds to swap nbytes with each peer (the best of `repeats`), by rank."""
    rank, size = comm.Get_rank(), comm.Get_size()
    out = np.zeros(max(nbytes // 8, 1))
    into = np.empty_like(out)
    times: dict[int, float] = {}
    for rnd in range(size - 1 + size % 2):
        peer = partner(rank, rnd, size)
        if peer is None:
            continue
        comm.Sendrecv(out[:1], dest=peer, sendtag=TAG, recvbuf=into[:1], source=peer,
                      recvtag=TAG)  # opens the connection, outside the timing
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            comm.Sendrecv(out, dest=peer, sendtag=TAG, recvbuf=into, source=peer, recvtag=TAG)
            best = min(best, time.perf_counter() - t0)
        times[peer] = best
    return times


@dataclass
class LinkBlame:
    fastest_s: dict[int, float] = field(default_factory=dict)  # world rank -> its fastest link
    median_s: float = 0.0
    slow: list[int] = field(default_factory=list)
    nbytes: int = LINK_BYTES

    def line(self) -> str:
        kib = self.nbytes >> 10
        if not self.slow:
            return (f"straggler: none on the network ({len(self.fastest_s)} ranks' links "
                    f"measured, the median rank's fastest link moved {kib} KiB in "
                    f"{1e3 * self.median_s:.1f} ms)")
        return "; ".join(
            f"straggler: world rank {r} (network): its fastest link moved {kib} KiB in "
            f"{1e3 * self.fastest_s[r]:.1f} ms, {self.fastest_s[r] / self.median_s:.0f}x the "
            f"median rank's {1e3 * self.median_s:.1f} ms" for r in self.slow)

    def record(self) -> dict[str, Any]:
        return {"line": self.line(), "slow_ranks": self.slow, "median_s": self.median_s,
                "bytes": self.nbytes,
                "fastest_link_s": {str(r): v for r, v in self.fastest_s.items()}}


def judge(measured: dict[int, dict[int, float]], nbytes: int = LINK_BYTES) -> LinkBlame:
    """rank 0: measured[a][b] = a's time to swap with b (world ranks); a pair's time is the
    slower of its two ends' measurements."""
    ranks = sorted(measured)
    out = LinkBlame(nbytes=nbytes)
    for a in ranks:
        pairs = [max(t, measured.get(b, {}).get(a, t)) for b, t in measured[a].items()]
        if pairs:
            out.fastest_s[a] = min(pairs)
    if len(out.fastest_s) < 3:
        out.median_s = statistics.median(out.fastest_s.values()) if out.fastest_s else 0.0
        return out  # two ranks share their only link: whose end is slow is unknowable
    out.median_s = statistics.median(out.fastest_s.values())
    out.slow = [r for r, t in out.fastest_s.items()
                if t >= FACTOR * out.median_s and t - out.median_s >= MIN_EXTRA_S]
    return out

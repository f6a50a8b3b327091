"""One time base for every rank: offsets to rank 0's clock from a ping-pong (Cristian's method).

Rank r sends its time t1, rank 0 answers with its time t0 on receipt, rank r reads t2 when the
answer lands. Whatever the two one-way delays are, rank 0 read t0 somewhere inside [t1, t2] of
rank r's clock, so offset = t0 − (t1 + t2)/2 is off by at most (t2 − t1)/2: half the round trip.
The round with the shortest round trip of several gives the tightest bound; that bound is the
stated error. Two estimates (start and end of a run) give a linear map that also absorbs drift.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

PING_TAG = 7101
ROUNDS = 8


class Clock:
    """This rank's clock in seconds (monotonic), shifted by `skew_s` (tests inject a known skew)."""

    def __init__(self, skew_s: float = 0.0) -> None:
        self.skew_s = float(skew_s)

    def now(self) -> float:
        return time.perf_counter() + self.skew_s


@dataclass(frozen=True)
class Offset:
    """rank-0 time = local time + offset_s, within ±error_s; taken at local time at_s."""

    offset_s: float
    error_s: float
    at_s: float


def estimate_offsets(comm: Any, clock: Clock, rounds: int = ROUNDS) -> list[Offset]:
    """Collective: every rank's offset to rank 0 (rank 0's is exactly 0), known on every rank."""
    rank, size = comm.Get_rank(), comm.Get_size()
    mine = Offset(0.0, 0.0, clock.now())
    ping = np.zeros(1)
    pong = np.zeros(1)
    for peer in range(1, size):
        if rank == 0:
            for _ in range(rounds):
                comm.Recv(ping, source=peer, tag=PING_TAG)
                pong[0] = clock.now()
                comm.Send(pong, dest=peer, tag=PING_TAG)
        elif rank == peer:
            best = None
            for _ in range(rounds):
                t1 = clock.now()
                ping[0] = t1
                comm.Send(ping, dest=0, tag=PING_TAG)
                comm.Recv(pong, source=0, tag=PING_TAG)
                t2 = clock.now()
                if best is None or t2 - t1 < best[1] - best[0]:
                    best = (t1, t2, float(pong[0]))
            assert best is not None
            t1, t2, t0 = best
            mine = Offset(t0 - (t1 + t2) / 2, (t2 - t1) / 2, (t1 + t2) / 2)
    return list(comm.allgather(mine))


class ClockMap:
    """Local time -> rank-0 time: constant offset from one estimate, linear between two."""

    def __init__(self, first: Offset, last: Offset | None = None) -> None:
        self.first, self.last = first, last

    def to_rank0(self, t: float) -> float:
        a, b = self.first, self.last
        if b is None or b.at_s <= a.at_s:
            return t + a.offset_s
        frac = (t - a.at_s) / (b.at_s - a.at_s)
        return t + a.offset_s + frac * (b.offset_s - a.offset_s)

    @property
    def error_s(self) -> float:
        return max(self.first.error_s, self.last.error_s if self.last else 0.0)

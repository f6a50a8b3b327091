"""Stall reports without fault tolerance: which ranks have not reached the reduction, and where.

Every rank posts a tiny non-blocking note "world rank r reached step s, bucket b" to rank 0
each time it starts a reduction (no waiting; a slot whose send has not completed is skipped).
A thread on rank 0 drains the notes every poll and keeps each rank's latest position. When the
furthest position any rank has reached is older than `warn_s` and some ranks are still behind
it, rank 0 prints one line naming them and where they were last seen, and repeats every
`warn_s` while the stall lasts. It never kills or revokes anything: that is --ft's business.

The notes travel on a duplicate of the communicator, so they can never match the training's
own messages; this needs MPI_THREAD_MULTIPLE (mpi4py's default), which distnet already relies on.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

STALL_TAG = 7201
SLOTS = 64
CLOSE = -2  # bucket value of the last note a rank sends
Position = tuple[int, int]  # (step, bucket)


def stall_line(step: int, bucket: int, waited_s: float,
               behind: dict[int, Position | None]) -> str:
    where = "; ".join(f"world rank {r} " + ("never seen" if pos is None
                                            else f"last at step {pos[0]} bucket {pos[1]}")
                      for r, pos in sorted(behind.items()))
    ranks = ",".join(str(r) for r in sorted(behind))
    return (f"distnet: stall: step {step} bucket {bucket} has waited {waited_s:.0f} s for "
            f"world rank(s) {ranks} to arrive ({where})")


class StallTable:
    """Rank 0's view: each rank's latest position and when the furthest one was first seen."""

    def __init__(self, ranks: list[int], warn_s: float, now: Callable[[], float]) -> None:
        self.ranks = ranks
        self.warn_s = warn_s
        self.now = now
        self.latest: dict[int, Position] = {}
        self.front: Position = (-1, -1)
        self.front_since = now()
        self.last_warn = -float("inf")

    def note(self, rank: int, pos: Position) -> None:
        if pos > self.latest.get(rank, (-1, -1)):
            self.latest[rank] = pos
        if pos > self.front:
            self.front, self.front_since = pos, self.now()

    def check(self) -> str | None:
        """A stall line if one is due now, else None."""
        t = self.now()
        behind: dict[int, Position | None] = {
            r: self.latest.get(r) for r in self.ranks
            if self.latest.get(r, (-1, -1)) < self.front}
        if not behind or t - self.front_since < self.warn_s or t - self.last_warn < self.warn_s:
            return None
        self.last_warn = t
        return stall_line(*self.front, t - self.front_since, behind)


class StallReporter:
    """Collective to build and to close; `arrive` is called by the main thread of every rank."""

    def __init__(self, comm: Any, world_rank: int, warn_s: float,
                 emit: Callable[[str], None] | None = None, poll_s: float | None = None) -> None:
        self.comm = comm.Dup()
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.warn_s = warn_s
        self._emit = emit or (lambda line: print(line, file=sys.stderr, flush=True))
        self._slots = np.zeros((SLOTS, 3), dtype=np.int64)
        self._reqs: list[Any] = [None] * SLOTS
        self._next = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lines: list[str] = []
        ranks = self.comm.allgather(world_rank)
        self.world_rank = world_rank
        if self.rank == 0:
            self.table = StallTable(ranks, warn_s, time.monotonic)
            self._poll_s = poll_s if poll_s is not None else min(1.0, max(warn_s / 4, 0.01))
            self._thread = threading.Thread(target=self._watch, name="stall-watch", daemon=True)
            self._thread.start()

    def arrive(self, step: int, bucket: int) -> None:
        if self.rank == 0:
            with self._lock:
                self.table.note(self.world_rank, (step, bucket))
            return
        self._send(step, bucket)

    def _send(self, step: int, bucket: int) -> None:
        i = self._next
        req = self._reqs[i]
        if req is not None and not req.Test():
            return  # rank 0 is not draining: drop this note rather than wait
        self._slots[i] = (self.world_rank, step, bucket)
        self._reqs[i] = self.comm.Isend(self._slots[i], dest=0, tag=STALL_TAG)
        self._next = (i + 1) % SLOTS

    def _drain(self, block_until_closed: int = 0) -> int:
        """Receive pending notes; with block_until_closed > 0 wait for that many CLOSE notes."""
        from mpi4py import MPI

        closed = 0
        note = np.zeros(3, dtype=np.int64)
        while closed < block_until_closed or self.comm.Iprobe(source=MPI.ANY_SOURCE,
                                                              tag=STALL_TAG):
            self.comm.Recv(note, source=MPI.ANY_SOURCE, tag=STALL_TAG)
            if note[2] == CLOSE:
                closed += 1
                continue
            with self._lock:
                self.table.note(int(note[0]), (int(note[1]), int(note[2])))
        return closed

    def _watch(self) -> None:
        from mpi4py import MPI

        while not self._stop.wait(self._poll_s):
            try:
                self._drain()
            except MPI.Exception:
                return  # the communicator broke (a peer died): reporting ends, training decides
            with self._lock:
                line = self.table.check()
            if line:
                self.lines.append(line)
                self._emit(line)

    def close(self) -> None:
        """Collective: every rank's notes are received before the communicator is freed."""
        from mpi4py import MPI

        if self.rank == 0:
            self._stop.set()
            assert self._thread is not None
            self._thread.join()
            self._drain(block_until_closed=self.size - 1)
        else:
            pending = [r for r in self._reqs if r is not None]
            last = np.array([self.world_rank, 0, CLOSE], dtype=np.int64)
            pending.append(self.comm.Isend(last, dest=0, tag=STALL_TAG))
            MPI.Request.Waitall(pending)
        self.comm.Free()

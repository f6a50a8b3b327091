"""Deadlines: find the rank that stopped answering, and never wait forever.

Two mechanisms, one per phase of a step:

A watchdog thread guards the reduction phase of every step (gradient all-reduce, checksum,
agreement). Before entering it, each rank posts a tiny non-blocking "step s: arrived" note to
every other rank (`Arrivals`). If the phase is still running when the deadline passes:

- some notes never came: those ranks are laggards (hung, or far too slow). A live but hung
  process cannot be shrunk away by ULFM (Shrink waits for every live rank), so the survivors
  fence it: they SIGKILL it (same host; elsewhere a resource manager would) and it becomes an
  ordinary failed rank that Revoke/Shrink remove;
- every note came: everybody is in the reduction, so a message was lost. Nobody is killed.

Either way the watchdog then revokes the communicator, which makes the blocked call raise on
every rank; the step is redone after the shrink (which keeps everyone in the second case).

The deadline comes from measured step times: 10x the median of the recent steps plus a margin
(oversubscribed ranks are descheduled for tens of milliseconds), or --deadline-s if given.
Until a few steps are measured, and right after a checkpoint or an evaluation, a long warm-up
deadline applies.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

ARRIVAL_TAG = 7007
WARMUP_DEADLINE_S = 30.0
MARGIN_S = 5.0
FACTOR = 10.0
MIN_SAMPLES = 3
NOTE_GRACE_S = 1.0  # the watchdog keeps testing the arrival notes this long before naming


class DeadlineClock:
    """The current deadline: fixed, or derived from the last step intervals."""

    def __init__(self, fixed_s: float = 0.0, window: int = 20) -> None:
        self.fixed_s = fixed_s
        self.intervals: deque[float] = deque(maxlen=window)
        self._last: float | None = None
        self.relaxed = True

    def tick(self) -> None:
        """Call once per completed step."""
        now = time.perf_counter()
        if self._last is not None and not self.relaxed:
            self.intervals.append(now - self._last)
        self._last, self.relaxed = now, False

    def relax(self) -> None:
        """The next step follows a checkpoint or an evaluation: do not hold it to step pace."""
        self.relaxed = True

    def deadline_s(self) -> float:
        if self.fixed_s:
            return self.fixed_s
        if self.relaxed or len(self.intervals) < MIN_SAMPLES:
            return WARMUP_DEADLINE_S
        return FACTOR * statistics.median(self.intervals) + MARGIN_S


class Arrivals:
    """Notes "step s: I am at the reduction" sent to every peer, read only if it gets stuck.

    Posting costs 2(p-1) tiny non-blocking messages and no waiting: when the reduction
    completes, every rank has arrived and `finish` returns at once. Only the watchdog thread
    looks at them, to name who never arrived; a lock keeps it and the main thread from touching
    the requests at the same time.
    """

    def __init__(self, comm: Any, step: int) -> None:
        rank, size = comm.Get_rank(), comm.Get_size()
        self.peers = [p for p in range(size) if p != rank]
        self._note = np.array([step], dtype=np.int64)
        self._inbox = np.empty(max(len(self.peers), 1), dtype=np.int64)
        self._sends = [comm.Isend(self._note, dest=p, tag=ARRIVAL_TAG) for p in self.peers]
        self._recvs = [comm.Irecv(self._inbox[i:i + 1], source=p, tag=ARRIVAL_TAG)
                       for i, p in enumerate(self.peers)]
        self._lock = threading.Lock()
        self._closed = False

    def laggards(self) -> list[int] | None:
        """Watchdog thread: the peers whose note has not come; None if the step finished.

        Tested for a while, not once: a note that reached this host is completed only by MPI
        progress, and a main thread stuck outside MPI makes none (one Test then named a peer
        that had arrived, and a healthy rank was fenced)."""
        with self._lock:
            if self._closed:
                return None
            self._closed = True
            pending = dict(zip(self.peers, self._recvs, strict=True))
            end = time.monotonic() + NOTE_GRACE_S
            while pending:
                pending = {p: r for p, r in pending.items() if not r.Test()}
                if not pending or time.monotonic() >= end:
                    break
                time.sleep(0.01)
            return sorted(pending)

    def finish(self) -> bool:
        """Main thread, after the reduction: complete the notes; False if the watchdog won."""
        from mpi4py import MPI

        with self._lock:
            if self._closed:
                return False
            self._closed = True
        MPI.Request.Waitall(self._sends + self._recvs)
        return True


@contextmanager
def watchdog(timeout_s: float, on_expire: Callable[[], None]) -> Iterator[None]:
    """Run the body; if it is still running after timeout_s, call on_expire from a thread."""
    timer = threading.Timer(timeout_s, on_expire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()

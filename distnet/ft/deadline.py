"""Deadlines: find the rank that stopped answering, and never wait forever.

Two mechanisms, one per phase of a step:

- arrival: after computing its gradient, every rank sends a tiny "step s done" note to every
  other rank and polls for the notes of the others against the clock. Whoever has not arrived
  when the deadline passes is the laggard (hung or far too slow). A live but hung process cannot
  be shrunk away by ULFM (Shrink waits for every live rank), so the survivors fence it: they
  SIGKILL it (same host; elsewhere a resource manager would) and it becomes an ordinary failed
  rank that Revoke/Shrink remove.
- reduction: all ranks have arrived, so a reduction that still does not finish has lost a
  message. A watchdog thread revokes the communicator, which makes the blocked call raise on
  every rank; nobody died, so the shrink keeps everyone and the step is redone.

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
POLL_MAX_S = 0.002


class DeadlineMiss(Exception):
    """Some ranks did not arrive in time; `laggards` are their ranks in the communicator."""

    def __init__(self, laggards: list[int], waited_s: float) -> None:
        super().__init__(f"ranks {laggards} missed the {waited_s:.2f} s deadline")
        self.laggards, self.waited_s = laggards, waited_s


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


def wait_arrivals(comm: Any, step: int, deadline_s: float) -> float:
    """Tell every rank this one is ready for the reduction of `step`; wait for all of them.

    Returns the seconds waited; raises DeadlineMiss naming the ranks that never arrived, or
    the MPI error if a peer is known dead.
    """
    from mpi4py import MPI

    rank, size = comm.Get_rank(), comm.Get_size()
    peers = [p for p in range(size) if p != rank]
    note = np.array([step], dtype=np.int64)
    inbox = {p: np.empty(1, dtype=np.int64) for p in peers}
    sends = [comm.Isend(note, dest=p, tag=ARRIVAL_TAG) for p in peers]
    recvs = {p: comm.Irecv(inbox[p], source=p, tag=ARRIVAL_TAG) for p in peers}
    t0 = time.perf_counter()
    pause = 1e-5
    while recvs:
        for p in [p for p, req in recvs.items() if req.Test()]:
            del recvs[p]
        waited = time.perf_counter() - t0
        if recvs and waited > deadline_s:
            # the pending requests are abandoned with the communicator the recovery replaces
            raise DeadlineMiss(sorted(recvs), waited)
        if recvs:
            time.sleep(pause)  # yield the core: ranks are often oversubscribed
            pause = min(pause * 2, POLL_MAX_S)
    MPI.Request.Waitall(sends)
    return time.perf_counter() - t0


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

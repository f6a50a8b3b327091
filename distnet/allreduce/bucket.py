"""Gradient bucketing with compute/communication overlap (the PyTorch DDP reducer, in small).

The flat gradient buffer is in forward layer order, but backward finishes the *last* layer first,
so buckets are contiguous slices cut from the end of the buffer: bucket 0 is the tail. As soon
as backward has finalised every element of a bucket, its all-reduce starts (non-blocking) while
the earlier layers are still computing. Bucket 0 is small (DDP's ``first_bucket_bytes``, 1 MiB)
so communication starts early instead of waiting for a full 25 MiB.

Buckets are byte ranges, not sets of whole layers: a boundary may fall inside a layer and one
layer may span several buckets. Every rank cuts the same buckets and starts them strictly in
bucket order, so collectives match across ranks whatever order the hooks arrive in.

Each bucket all-reduces on its own duplicate of the communicator: several reductions are in
flight at once, and separate communicators make it impossible for one bucket's point-to-point
messages to match another's, whatever tags the executor uses.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from distnet.allreduce import auto
from distnet.allreduce.mpi import AllreduceRequest, start
from distnet.allreduce.registry import get
from distnet.common.errors import UserError
from distnet.common.units import MIB

FIRST_BUCKET_BYTES = 1 * MIB  # DDP's first_bucket_bytes: the first reduction starts early


class BucketObserver(Protocol):
    """Told when each bucket's reduction starts and is seen done (distnet/observe/observer.py)."""

    detail: bool

    def reduce_start(self, bucket: int) -> None: ...

    def reduce_done(self, bucket: int, algorithm: str = "",
                    steps: list[tuple[int, float, float]] | None = None) -> None: ...


def plan_buckets(n: int, itemsize: int, bucket_bytes: int,
                 first_bucket_bytes: int) -> list[tuple[int, int]]:
    """Element ranges [lo, hi) of the buckets in issue order: tail of the buffer first.

    The first bucket holds first_bucket_bytes, the others bucket_bytes (each at least one
    element); the last one takes whatever is left, so together they tile [0, n) exactly.
    """
    if bucket_bytes <= 0 or first_bucket_bytes <= 0:
        raise UserError("bucket sizes must be positive")
    buckets: list[tuple[int, int]] = []
    hi = n
    size = max(1, first_bucket_bytes // itemsize)
    while hi > 0:
        lo = max(0, hi - size)
        buckets.append((lo, hi))
        hi = lo
        size = max(1, bucket_bytes // itemsize)
    return buckets


class _ProgressThread:
    """Polls `progress` every poll_s while woken: MPI moves data only inside MPI calls.

    Open MPI has no asynchronous progress for shared memory or TCP, so a reduction started in
    a hook otherwise advances only at the next hook, one layer later. NumPy's matmuls release
    the GIL, so this thread's Test calls run while backward computes. All request access happens
    under the Bucketer's lock (the requests are not thread-safe); it needs MPI_THREAD_MULTIPLE.
    """

    def __init__(self, progress: Callable[[], bool], lock: threading.Lock,
                 poll_s: float) -> None:
        self._progress = progress
        self._lock = lock
        self._poll_s = poll_s
        self.wake = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="bucket-progress", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            self.wake.wait()
            if self._stop:
                return
            with self._lock:
                # Everything in flight is done: sleep until woken. Clearing under the lock, as
                # hook and stop set it under the lock, means no wake-up can be lost.
                if self._progress() and not self._stop:
                    self.wake.clear()
            time.sleep(self._poll_s)

    def stop(self) -> None:
        with self._lock:
            self._stop = True
            self.wake.set()
        self._thread.join()


def _thread_multiple() -> bool:
    from mpi4py import MPI

    return bool(MPI.Query_thread() == MPI.THREAD_MULTIPLE)


# start_range(bucket's comm, lo, hi, algorithm) -> request: begins reducing grads[lo:hi].
RangeStarter = Callable[[Any, int, int, str], AllreduceRequest]


class Bucketer:
    """Reduce `grads` bucket by bucket as backward finalises it; see the module docstring.

    Use once per step: ``model.backward(dout, hook=bucketer.hook)`` then ``bucketer.finish()``.
    With overlap=False the same buckets are all started only in `finish` (the baseline).
    progress_thread=True (only with overlap, and only if MPI runs THREAD_MULTIPLE) adds a
    thread that keeps in-flight reductions moving between hooks, polling every poll_s.
    Call `close` (or use it as a context manager) to free the communicators and the thread.
    """

    def __init__(self, comm: Any, grads: np.ndarray, param_slices: list[tuple[int, int]],
                 algorithm: str, bucket_bytes: int = 25 * MIB,
                 first_bucket_bytes: int = FIRST_BUCKET_BYTES, overlap: bool = True,
                 progress_thread: bool = False, poll_s: float = 50e-6,
                 start_range: RangeStarter | None = None) -> None:
        if grads.ndim != 1 or not grads.flags.c_contiguous:
            raise UserError("gradients must be one flat contiguous buffer")
        n = grads.shape[0]
        covered = np.zeros(n, dtype=bool)
        for lo, hi in param_slices:
            if not 0 <= lo <= hi <= n:
                raise UserError(f"parameter slice [{lo}, {hi}) is outside the {n}-element buffer")
            if covered[lo:hi].any():
                raise UserError(f"parameter slice [{lo}, {hi}) overlaps another one")
            covered[lo:hi] = True
        get(algorithm)  # an unknown name is a UserError listing the known ones
        self.grads = grads
        self.algorithm = algorithm
        self.overlap = overlap
        self.buckets = plan_buckets(n, grads.itemsize, bucket_bytes, first_bucket_bytes)
        # auto is resolved here, once, so no agreement collective runs in the middle of backward.
        self.algorithms = [
            auto.resolve(comm, (hi - lo) * grads.itemsize) if algorithm == "auto" else algorithm
            for lo, hi in self.buckets
        ]
        self._comms = [comm.Dup() for _ in self.buckets]
        # A compressor (distnet.compress) reduces its own encoding of each bucket and picks
        # `auto`'s choice per wire size: agree the tune table on every bucket's communicator now,
        # so that no collective runs in the middle of backward.
        self._start_range = start_range
        if start_range is not None and algorithm == "auto":
            for c in self._comms:
                auto.agreed_table(c)
        self.observer: BucketObserver | None = None
        # Elements outside every parameter slice are never reported by a hook: final from the start.
        self._untracked = ~covered
        self._reset()
        self._lock = threading.Lock()
        self._thread = (_ProgressThread(self._progress, self._lock, poll_s)
                        if overlap and progress_thread and _thread_multiple() else None)

    def _reset(self) -> None:
        self._final = self._untracked.copy()
        self._missing = np.array(
            [int((~self._final[lo:hi]).sum()) for lo, hi in self.buckets], dtype=np.int64)
        self._requests: list[AllreduceRequest] = []
        self._done: list[bool] = []

    def hook(self, start: int, end: int) -> None:
        """Gradient slice [start, end) is final; start every bucket that just became complete."""
        if not 0 <= start <= end <= self.grads.shape[0]:
            raise UserError(f"hook slice [{start}, {end}) is outside the gradient buffer")
        if self._final[start:end].any():
            raise UserError(f"gradient slice [{start}, {end}) reported twice in one step")
        self._final[start:end] = True
        for i, (lo, hi) in enumerate(self.buckets):
            self._missing[i] -= max(0, min(hi, end) - max(lo, start))
        if self.overlap:
            with self._lock:
                self._launch(ready_only=True)
                if not self._progress() and self._thread is not None:
                    self._thread.wake.set()

    def _launch(self, ready_only: bool) -> None:
        # Strict bucket order: every rank issues the same collectives in the same sequence.
        while len(self._requests) < len(self.buckets):
            i = len(self._requests)
            if ready_only and self._missing[i] > 0:
                return
            lo, hi = self.buckets[i]
            obs = self.observer
            if obs is not None:
                obs.reduce_start(i)
            # Every algorithm has a non-blocking form: a schedule's steps, or native's Iallreduce.
            if self._start_range is not None:
                request = self._start_range(self._comms[i], lo, hi, self.algorithm)
            else:
                request = start(self._comms[i], self.grads[lo:hi], self.algorithms[i])
            if obs is not None and obs.detail:
                # The first step was posted inside start; its time is start's return.
                request.step_log = []
            self._requests.append(request)
            self._done.append(False)

    def _mark_done(self, i: int) -> None:
        self._done[i] = True
        if self.observer is not None:
            self.observer.reduce_done(i, self.algorithms[i],
                                      self._requests[i].step_log)

    def _progress(self) -> bool:
        """Test every unfinished request once; True when all started buckets are done."""
        for i, request in enumerate(self._requests):
            if not self._done[i] and request.test():
                self._mark_done(i)
        return all(self._done)

    def finish(self) -> None:
        """Start what has not started (even slices no hook reported), wait for all, reset."""
        with self._lock:
            self._launch(ready_only=False)
            for i, request in enumerate(self._requests):
                if not self._done[i]:
                    request.wait()
                    self._mark_done(i)
            self._reset()

    def close(self) -> None:
        if self._thread is not None:
            self._thread.stop()
            self._thread = None
        for c in self._comms:
            c.Free()
        self._comms = []

    def __enter__(self) -> Bucketer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

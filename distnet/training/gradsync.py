"""Sum gradients across ranks: one all-reduce of the flat buffer, or buckets overlapped with
backward.

The trainer never knows which algorithm runs: it calls `hook` from backward and `finish` after it.
With `--compress` every reduction goes through the compressor (distnet/compress), bucket by
bucket or the whole buffer; the trainer then calls `commit` once the update is applied (or
`abort` when fault tolerance redoes the step), so compressor state moves on only with the step.
A subclass that must see each gradient slice before it is reduced (the fault-tolerant trainer's
checksum, ft/integrity.py) overrides `ready`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from distnet import compress
from distnet.allreduce import auto, get
from distnet.allreduce.mpi import start
from distnet.allreduce.registry import SCHEDULES
from distnet.allreduce.shm import SMALL_BYTES, ShmAllreduce
from distnet.common.units import MIB


def shared_grad_buffer(comm: Any, n: int, dtype: Any, algorithm: str,
                       bucket_mb: float = 0.0) -> np.ndarray | None:
    """A zeroed n-element gradient buffer in `shm`'s shared window (collective), or None where
    it would not pay.

    It pays when some reduction a GradSync(comm, ..., algorithm, bucket_mb) runs, the whole
    buffer or one bucket, is `shm` (by name, or `auto`'s pick for that size) and larger than
    shm's one-sync path, which copies whatever the buffer: backward then writes the gradients
    straight where the peers read them. It cannot be had on one rank or across nodes (no
    common memory). The caller must not reduce it on another communicator's window after a
    failure: fault-tolerant trainers keep private buffers (a shrink leaves the window's dead
    member behind, and the window's free is collective).
    """
    shm = get("shm")
    if comm.Get_size() == 1 or n == 0 or not isinstance(shm, ShmAllreduce):
        return None
    itemsize = np.dtype(dtype).itemsize
    ranges = [(0, n)]
    if bucket_mb > 0:
        from distnet.allreduce.bucket import FIRST_BUCKET_BYTES, plan_buckets

        ranges = plan_buckets(n, itemsize, max(1, int(bucket_mb * MIB)), FIRST_BUCKET_BYTES)
    sizes = [(hi - lo) * itemsize for lo, hi in ranges]
    # auto.resolve is collective on a communicator's first use: every rank asks the same sizes.
    picks = [auto.resolve(comm, b) if algorithm == "auto" else algorithm for b in sizes]
    if not any(pick == "shm" and b > SMALL_BYTES for pick, b in zip(picks, sizes, strict=True)):
        return None
    buf = shm.buffer(comm, n, dtype)
    return buf if shm.holds(buf) else None


def release_grad_buffer(buf: np.ndarray) -> None:
    """Free the window of a buffer from `shared_grad_buffer` (collective; do not use it again)."""
    shm = get("shm")
    if isinstance(shm, ShmAllreduce):
        shm.release(buf)


@dataclass(frozen=True)
class Compression:
    """Which compressor reduces the gradients, over which tensors, with which options."""

    name: str = "none"
    tensors: tuple[compress.Tensor, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)


class GradSync:
    def __init__(self, comm: Any, grads: np.ndarray, param_slices: list[tuple[int, int]],
                 algorithm: str, bucket_mb: float = 0.0, overlap: bool = True,
                 compression: Compression | None = None) -> None:
        self.comm = comm
        self.grads = grads
        self.algorithm = algorithm
        self._fn = get(algorithm)
        self._bucketer = None
        self._observer: Any = None
        spec = compression or Compression()
        self.compressing = spec.name != "none"
        if bucket_mb > 0 and comm.Get_size() > 1:
            from distnet.allreduce.bucket import Bucketer

            bucket_bytes = max(1, int(bucket_mb * MIB))
            self._bucketer = Bucketer(
                comm, grads, param_slices, algorithm, bucket_bytes=bucket_bytes,
                overlap=overlap,
                start_range=self._start_range if self.compressing else None)
        ranges = self._bucketer.buckets if self._bucketer is not None else [(0, grads.shape[0])]
        self.compressor = compress.get(spec.name)(grads, spec.tensors, ranges, **spec.options)

    def _start_range(self, comm: Any, lo: int, hi: int, algorithm: str) -> Any:
        return self.compressor.start(comm, lo, hi, algorithm)

    def observe(self, observer: Any) -> None:
        """Report each reduction's start and end to `observer` (distnet/observe/observer.py)."""
        self._observer = observer
        if self._bucketer is not None:
            self._bucketer.observer = observer

    def ready(self, start: int, end: int) -> None:
        """Gradients [start, end) are final: start that bucket's reduction."""
        if self._bucketer is not None:
            self._bucketer.hook(start, end)

    @property
    def hook(self) -> Callable[[int, int], None] | None:
        """For model.backward; None when nothing needs to see slices (backward skips the calls)."""
        return self.ready if self._bucketer is not None else None

    def finish(self) -> None:
        """Block until every gradient is summed over all ranks."""
        if self.comm.Get_size() == 1 and not self.compressing:
            return  # (a compressor still runs on one rank: its loss is part of the result)
        if self._bucketer is not None:
            self._bucketer.finish()
            return
        obs = self._observer
        if self.compressing:
            if obs is not None:
                obs.reduce_start(0)
            self.compressor.start(self.comm, 0, self.grads.shape[0], self.algorithm).wait()
            if obs is not None:
                obs.reduce_done(0, self.algorithm, None)
            return
        if obs is None:
            self._fn(self.comm, self.grads)
            return
        obs.reduce_start(0)
        log = None
        if obs.detail and self.algorithm in SCHEDULES:
            # --trace-detail: the non-blocking form of the same schedule, to time its steps.
            handle = start(self.comm, self.grads, self.algorithm)
            log = handle.step_log = []
            handle.wait()
        else:
            self._fn(self.comm, self.grads)
        obs.reduce_done(0, self.algorithm, log)

    def close(self) -> None:
        """Free the buckets' duplicated communicators (a search runs many trainers)."""
        if self._bucketer is not None:
            self._bucketer.close()
            self._bucketer = None

    def commit(self) -> None:
        """The step's update is applied everywhere: the compressor's staged state is kept."""
        self.compressor.commit()

    def abort(self) -> None:
        """The step is redone: the compressor forgets what this attempt staged."""
        self.compressor.abort()

    @property
    def nbytes(self) -> int:
        """Bytes of gradient (what --compress none puts on the wire)."""
        return int(self.grads.nbytes)

    def wire_stages(self) -> list[int]:
        """Bytes each rank hands the all-reduce per step, per stage, summed over buckets."""
        stages: list[int] = []
        for per_range in self.compressor.reductions():
            for k, nbytes in enumerate(per_range):
                if k == len(stages):
                    stages.append(0)
                stages[k] += nbytes
        return stages

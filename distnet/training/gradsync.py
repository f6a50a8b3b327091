"""Sum gradients across ranks: one all-reduce of the flat buffer, or buckets overlapped with
backward.

The trainer never knows which algorithm runs: it calls `hook` from backward and `finish` after it.
A subclass that must see each gradient slice before it is reduced (the fault-tolerant trainer's
checksum, ft/integrity.py) overrides `ready`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from distnet.allreduce import get
from distnet.allreduce.mpi import start
from distnet.allreduce.registry import SCHEDULES
from distnet.common.units import MIB


class GradSync:
    def __init__(self, comm: Any, grads: np.ndarray, param_slices: list[tuple[int, int]],
                 algorithm: str, bucket_mb: float = 0.0, overlap: bool = True) -> None:
        self.comm = comm
        self.grads = grads
        self.algorithm = algorithm
        self._fn = get(algorithm)
        self._bucketer = None
        self._observer: Any = None
        if bucket_mb > 0 and comm.Get_size() > 1:
            from distnet.allreduce.bucket import Bucketer

            bucket_bytes = max(1, int(bucket_mb * MIB))
            self._bucketer = Bucketer(comm, grads, param_slices, algorithm,
                                      bucket_bytes=bucket_bytes, overlap=overlap)

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
        if self.comm.Get_size() == 1:
            return
        if self._bucketer is not None:
            self._bucketer.finish()
            return
        obs = self._observer
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

    @property
    def nbytes(self) -> int:
        return int(self.grads.nbytes)

"""Gradient integrity: a checksum that travels with the reduction, and a parameter digest.

Each rank sums its local gradient in float64 (before any of it is reduced) and the ranks
all-reduce those sums next to the gradient. The sum of the reduced gradient must then equal the
reduced checksum up to rounding: |sum(g) - S| <= 4 p eps sum|g_i| (p additions of rounded terms
per element). A NaN or inf anywhere poisons both sums on every rank, so every rank sees it.
A flipped high bit changes an entry by ~1e38 and is caught; a flip in the lowest mantissa bits
is below rounding and harmless, so it is neither caught nor needs to be.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import numpy as np

from distnet.training.gradsync import Compression, GradSync

Hook = Callable[[int, int], None]


class CheckedSync(GradSync):
    """A GradSync that checksums each gradient slice before it is reduced.

    With bucketing, reductions start inside backward, so the local sums must be taken as each
    slice becomes ready, before it is handed to its bucket, not after backward.
    """

    def __init__(self, comm: Any, grads: np.ndarray, param_slices: list[tuple[int, int]],
                 algorithm: str, bucket_mb: float = 0.0, overlap: bool = True,
                 compression: Compression | None = None) -> None:
        super().__init__(comm, grads, param_slices, algorithm, bucket_mb, overlap, compression)
        # A compressor changes the gradient before the wire (fp16 rounds, PowerSGD projects),
        # so with one the checksum guards what travels: the compressor's wire buffers.
        self.compressor.checksums = self.compressing
        self.local_sum = self.local_abs = 0.0
        self.poison_next = False  # fault injection: put a NaN into the next slice
        self._hooked = False

    def begin(self) -> None:
        self.local_sum = self.local_abs = 0.0
        self._hooked = False
        self.compressor.wire_sums[:] = 0.0

    def ready(self, start: int, end: int) -> None:
        self._hooked = True
        part = self.grads[start:end]
        if self.poison_next and end > start:
            part[0] = np.nan
            self.poison_next = False
        self.local_sum += float(part.sum(dtype=np.float64))
        self.local_abs += float(np.abs(part).sum(dtype=np.float64))
        super().ready(start, end)

    @property
    def hook(self) -> Hook:
        return self.ready  # always: the checksum must see every slice

    def finish(self) -> None:
        if not self._hooked:  # no sample on this rank this step: backward never ran
            self.local_sum = float(self.grads.sum(dtype=np.float64))
            self.local_abs = float(np.abs(self.grads).sum(dtype=np.float64))
        super().finish()
        if self.compressing:
            self.local_sum, self.local_abs = map(float, self.compressor.wire_sums[:2])

    def check(self, global_sum: float, global_abs: float, world: int) -> str | None:
        """None if what was reduced matches the ranks' summed checksums, else why not."""
        if self.compressing:
            got = float(self.compressor.wire_sums[2])
            return check_sum(got, global_sum, global_abs, world, self.compressor.wire_eps)
        return check_reduced(self.grads, global_sum, global_abs, world)


def check_reduced(reduced: np.ndarray, global_sum: float, global_abs: float,
                  world: int) -> str | None:
    """None if the reduced gradient matches its checksum, else why not ('nonfinite', ...)."""
    got = float(reduced.sum(dtype=np.float64))
    return check_sum(got, global_sum, global_abs, world, float(np.finfo(reduced.dtype).eps))


def check_sum(got: float, global_sum: float, global_abs: float, world: int,
              eps: float) -> str | None:
    """None if a reduced sum `got` matches the checksum within rounding at precision eps."""
    if not (np.isfinite(global_sum) and np.isfinite(global_abs)):
        return "nonfinite"
    if not np.isfinite(got):
        return "nonfinite"
    tol = 4.0 * max(world, 2) * eps * global_abs + 1e-300
    if abs(got - global_sum) > tol:
        return "checksum"
    return None


def param_digest(params: np.ndarray) -> str:
    """A short hash of the parameter bytes: equal digests on two ranks mean bitwise equality."""
    return hashlib.sha256(np.ascontiguousarray(params).tobytes()).hexdigest()[:16]

"""What every compressor shares: the tensor layout, the handle chain and the plain `none`.

A compressor sits between the flat gradient buffer and the all-reduce. `start(comm, lo, hi,
algorithm)` begins summing ``grads[lo:hi]`` over comm's ranks — encoded, reduced on the wire,
decoded back in place — and returns a handle with ``test()``/``wait()`` like `allreduce.start`,
so the bucketer can overlap it with backward. Ranges are fixed when the compressor is built (the
whole buffer, or the bucketer's buckets), so per-range state (PowerSGD's Q matrices and
error-feedback buffers) has a stable home and a stable checkpoint name.

Transactions (fault tolerance redoes a failed step): a step's reductions only stage new state;
`commit()` makes it current, `abort()` forgets it, so a redo starts from exactly the state the
failed attempt started from on every surviving rank.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from distnet.allreduce import auto
from distnet.allreduce.mpi import start as start_allreduce


@dataclass(frozen=True)
class Tensor:
    """One parameter tensor inside the flat gradient buffer: elements [lo, lo + size)."""

    lo: int
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def hi(self) -> int:
        return self.lo + self.size


def tensors_of(model: Any) -> list[Tensor]:
    """The parameter tensors of a distnet.nn Sequential, as compressors see them."""
    return [Tensor(lo, tuple(shape)) for lo, shape in model.param_tensors()]


def reduce_start(comm: Any, buf: np.ndarray, algorithm: str, op: Any) -> Any:
    """allreduce.start, with `auto` resolved for this buffer's size (cached by auto)."""
    name = auto.resolve(comm, buf.nbytes) if algorithm == "auto" else algorithm
    return start_allreduce(comm, buf, name) if op is None else start_allreduce(comm, buf, name, op)


# starter(comm, buf, algorithm, op or None) -> handle: begins an in-place all-reduce of buf.
Starter = Callable[[Any, np.ndarray, str, Any], Any]

# A stage does local work and returns the handle of the reduction it started, or None (last).
Stage = Callable[[], Any]


class Chain:
    """Stages run in turn, each once the previous stage's reduction has finished.

    The first stage runs at construction (like `allreduce.start`, which posts its first step),
    so peers can make progress at once.
    """

    def __init__(self, stages: Sequence[Stage], owner: Compressor | None = None) -> None:
        self._owner = owner  # its compute_s collects the stages' local work (for --profile)
        self._stages: Iterator[Stage] = iter(stages)
        self._handle: Any = None
        self.done = False
        self.step_log: list[tuple[int, float, float]] | None = None  # the request protocol's
        self._advance()

    def _advance(self) -> None:
        for stage in self._stages:
            t0 = time.perf_counter()
            self._handle = stage()
            if self._owner is not None:
                self._owner.compute_s += time.perf_counter() - t0
            if self._handle is not None:
                return
        self._handle, self.done = None, True

    def test(self) -> bool:
        while not self.done:
            if not self._handle.test():
                return False
            self._advance()
        return True

    def wait(self) -> None:
        while not self.done:
            self._handle.wait()
            self._advance()


class _Summed:
    """A reduction whose result is added to sums[2] once it completes (a wire checksum)."""

    def __init__(self, handle: Any, buf: np.ndarray, sums: np.ndarray) -> None:
        self._handle, self._buf, self._sums, self._done = handle, buf, sums, False
        self.step_log = None

    def _finish(self) -> None:
        if not self._done:
            self._sums[2] += float(self._buf.sum(dtype=np.float64))
            self._done = True

    def test(self) -> bool:
        if self._handle.test():
            self._finish()
            return True
        return False

    def wait(self) -> None:
        self._handle.wait()
        self._finish()


class Compressor:
    """`none`: the gradients go on the wire as they are. The base of every compressor."""

    name = "none"

    def __init__(self, grads: np.ndarray, tensors: Sequence[Tensor],
                 ranges: Sequence[tuple[int, int]], starter: Starter = reduce_start,
                 **options: Any) -> None:
        self.grads = grads
        self.tensors = list(tensors)
        self.ranges = [(int(lo), int(hi)) for lo, hi in ranges]
        # How a reduction begins: the real executor, or a test's in-process stand-in.
        self._starter = starter
        self.compute_s = 0.0  # encode/decode seconds since the trainer last read it
        # Wire checksums (fault tolerance turns them on): the sum and the sum of magnitudes of
        # every buffer this rank hands a SUM all-reduce, and the sum of each reduced result.
        # Summed over ranks, the local sums must equal the reduced ones up to rounding, so a
        # message damaged in transit shows, whatever the compressor did before the wire.
        self.checksums = False
        self.wire_sums = np.zeros(3, dtype=np.float64)  # local sum, local |sum|, reduced sum

    def reduce_start(self, comm: Any, buf: np.ndarray, algorithm: str, op: Any) -> Any:
        """Begin an all-reduce of buf (through the starter), checksummed if asked."""
        if not self.checksums or op is not None:
            return self._starter(comm, buf, algorithm, op)
        self.wire_sums[0] += float(buf.sum(dtype=np.float64))
        self.wire_sums[1] += float(np.abs(buf).sum(dtype=np.float64))
        return _Summed(self._starter(comm, buf, algorithm, op), buf, self.wire_sums)

    @property
    def wire_eps(self) -> float:
        """Machine epsilon of what goes on the wire (the checksum's rounding scale)."""
        return float(np.finfo(self.grads.dtype).eps)

    def take_compute_s(self) -> float:
        """Encode/decode seconds since the last call (the step's compression compute)."""
        spent, self.compute_s = self.compute_s, 0.0
        return spent

    def start(self, comm: Any, lo: int, hi: int, algorithm: str) -> Any:
        """Begin summing grads[lo:hi] over comm in place; (lo, hi) is one of `ranges`."""
        return self.reduce_start(comm, self.grads[lo:hi], algorithm, None)

    def reductions(self) -> list[list[int]]:
        """Per range, the bytes of each all-reduce one step runs on it, in order (each waits
        for the one before): what the network carries, for --profile and distnet.whatif."""
        return [[(hi - lo) * self.grads.itemsize] for lo, hi in self.ranges]

    def wire_bytes(self) -> int:
        """Bytes each rank hands the all-reduce per step (the payload, summed over ranges)."""
        return sum(sum(r) for r in self.reductions())

    # ---- transactions and checkpoints (stateless here) ----
    def commit(self) -> None:
        """The step's reductions are accepted everywhere: staged state becomes current."""

    def abort(self) -> None:
        """The step is redone: forget what its reductions staged."""

    def shared_state(self) -> dict[str, np.ndarray]:
        """State identical on every rank (saved once)."""
        return {}

    def local_state(self) -> dict[str, np.ndarray]:
        """State of this rank alone (saved per rank)."""
        return {}

    def load_state(self, shared: dict[str, np.ndarray],
                   local: dict[str, np.ndarray]) -> None:
        """Restore what shared_state/local_state returned (bit for bit)."""

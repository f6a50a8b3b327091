"""fp16 and bf16: the gradients travel as 16-bit floats, half the bytes of float32.

fp16 (IEEE binary16) has a 5-bit exponent: its largest finite value is 65504 and values below
6.1e-5 lose precision as subnormals. So the buffer is scaled by a power of two before the cast,
chosen from the largest magnitude on any rank (one extra one-element MAX all-reduce) so that a
p-way sum stays below half of 65504 — the partial sums of every schedule are bounded by
p · max|g| — and small gradients are lifted out of the subnormal range. A power of two makes the
scaling and its undoing exact. bf16 (bfloat16, via ml_dtypes) keeps float32's 8-bit exponent:
its p-way sum overflows exactly when the float32 sum would, so it needs no scale and no extra
reduction, only fewer mantissa bits (8 against float32's 24).

On the wire and in the executor's buffers the values are 16-bit; each reduction computes the sum
of two operands in float32 and rounds it once to the narrow type (NumPy's float16 and ml_dtypes'
bfloat16 ufuncs do exactly that), and the decoded result is added back in float32. With
`--allreduce native` the 16-bit words go through MPI with a user-defined op (see native.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import ml_dtypes
import numpy as np

from distnet.allreduce.ops import MAX
from distnet.compress.base import Chain, Compressor, Tensor

FP16_MAX = float(np.finfo(np.float16).max)
SCALE_MAX_EXP = 24  # at most 2**24 up: lifts gradients of ~1e-12 to fp16's normal range


def fp16_scale(global_max: float, p: int) -> float:
    """The power of two s with p · global_max · s ≤ 65504 / 2 (1 when there is nothing to scale).

    A non-finite maximum gives 1: the cast then keeps the inf/nan, which the run should see.
    """
    if not math.isfinite(global_max) or global_max <= 0.0:
        return 1.0
    exp = math.floor(math.log2(FP16_MAX / 2 / (p * global_max)))
    return float(2.0 ** max(-126, min(SCALE_MAX_EXP, exp)))


class CastCompressor(Compressor):
    """Cast each range to `wire_dtype` for the all-reduce and back; fp16 also scales."""

    def __init__(self, grads: np.ndarray, tensors: Sequence[Tensor],
                 ranges: Sequence[tuple[int, int]], wire_dtype: Any, scaled: bool,
                 **options: Any) -> None:
        super().__init__(grads, tensors, ranges, **options)
        self.wire_dtype = np.dtype(wire_dtype)
        self.scaled = scaled
        # One wire buffer per range, kept so the executor's compiled runs are reused every step.
        self._wire = {r: np.zeros(r[1] - r[0], dtype=self.wire_dtype) for r in self.ranges}
        self._max = {r: np.zeros(1, dtype=np.float32) for r in self.ranges}
        self.last_scale = 1.0

    def start(self, comm: Any, lo: int, hi: int, algorithm: str) -> Any:
        view, wire, peak = self.grads[lo:hi], self._wire[(lo, hi)], self._max[(lo, hi)]
        p = comm.Get_size()
        scale = [1.0]

        def agree_max() -> Any:
            peak[0] = np.max(np.abs(view)) if view.size else 0.0
            return self.reduce_start(comm, peak, algorithm, MAX)

        def encode() -> Any:
            if self.scaled:
                scale[0] = fp16_scale(float(peak[0]), p)
                np.multiply(view, np.float32(scale[0]), out=wire, casting="same_kind")
            else:
                wire[...] = view
            return self.reduce_start(comm, wire, algorithm, None)

        def decode() -> None:
            self.last_scale = scale[0]
            np.multiply(wire, np.float32(1.0 / scale[0]), out=view)  # exact: a power of two

        return Chain([agree_max, encode, decode] if self.scaled else [encode, decode], self)

    @property
    def wire_eps(self) -> float:
        return float(ml_dtypes.finfo(self.wire_dtype).eps)

    def reductions(self) -> list[list[int]]:
        size = self.wire_dtype.itemsize
        return [([4] if self.scaled else []) + [(hi - lo) * size] for lo, hi in self.ranges]


def fp16(grads: np.ndarray, tensors: Sequence[Tensor], ranges: Sequence[tuple[int, int]],
         **options: Any) -> CastCompressor:
    comp = CastCompressor(grads, tensors, ranges, np.float16, scaled=True, **options)
    comp.name = "fp16"
    return comp


def bf16(grads: np.ndarray, tensors: Sequence[Tensor], ranges: Sequence[tuple[int, int]],
         **options: Any) -> CastCompressor:
    comp = CastCompressor(grads, tensors, ranges, ml_dtypes.bfloat16, scaled=False, **options)
    comp.name = "bf16"
    return comp

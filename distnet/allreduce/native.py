"""`native`: the MPI library's own all-reduce (`comm.Allreduce` in place); the yardstick.

No schedule: Open MPI picks its algorithm internally (its tuned component switches between
recursive doubling, Rabenseifner and ring by size), so the simulator cannot replay it.
Cost: whatever Open MPI chose, at best that of the best algorithm here, run in C.

16-bit floats (the wire types of gradient compression): MPI has no standard half or bfloat16
type, so their bits travel as MPI_UINT16_T and the reduction is a user-defined commutative op
(`MPI.Op.Create`) whose function applies our NumPy/ml_dtypes ufunc: each partial sum is computed
in float32 and rounded once to the narrow type. Open MPI still picks the algorithm; the op runs
in Python, so this path costs more compute per byte than native float32.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from distnet.allreduce.mpi import validate
from distnet.allreduce.ops import SUM, ReduceOp, resolve_op

_NARROW_OPS: dict[tuple[str, str], Any] = {}  # (dtype, op) -> MPI.Op, created once per process


def _narrow_op(dtype: np.dtype, op: ReduceOp) -> Any:
    from mpi4py import MPI

    key = (dtype.name, op.name)
    if key not in _NARROW_OPS:
        ufunc = op.ufunc

        def combine(inbuf: Any, inoutbuf: Any, datatype: Any) -> None:
            src = np.frombuffer(inbuf, dtype=dtype)
            acc = np.frombuffer(inoutbuf, dtype=dtype)
            ufunc(acc, src, out=acc)

        _NARROW_OPS[key] = MPI.Op.Create(combine, commute=True)
    return _NARROW_OPS[key]


def _message(buf: np.ndarray, op: ReduceOp) -> tuple[Any, Any]:
    """(buffer spec, MPI op) for buf: 16-bit floats as raw words with their own op."""
    from mpi4py import MPI

    if buf.itemsize == 2:
        return [buf.view(np.uint16), MPI.UINT16_T], _narrow_op(buf.dtype, op)
    return buf, op.to_mpi()


def native_allreduce(comm: Any, buf: np.ndarray, op: Any = SUM) -> None:
    """comm.Allreduce(MPI.IN_PLACE, buf, op)."""
    from mpi4py import MPI

    validate(buf)
    msg, mpi_op = _message(buf, resolve_op(op))
    comm.Allreduce(MPI.IN_PLACE, msg, mpi_op)


class NativeRequest:
    """An MPI request (Iallreduce) behind the `mpi.AllreduceRequest` interface."""

    def __init__(self, request: Any) -> None:
        self._request = request
        self.step_log: list[tuple[int, float, float]] | None = None  # one MPI call: no steps

    def test(self) -> bool:
        return bool(self._request.Test())

    def wait(self) -> None:
        self._request.Wait()


def native_start(comm: Any, buf: np.ndarray, op: ReduceOp) -> NativeRequest:
    """Non-blocking native all-reduce: comm.Iallreduce."""
    from mpi4py import MPI

    msg, mpi_op = _message(buf, op)
    return NativeRequest(comm.Iallreduce(MPI.IN_PLACE, msg, mpi_op))

"""`native`: the MPI library's own all-reduce (`comm.Allreduce` in place); the yardstick.

No schedule: Open MPI picks its algorithm internally (its tuned component switches between
recursive doubling, Rabenseifner and ring by size), so the simulator cannot replay it.
Cost: whatever Open MPI chose, at best that of the best algorithm here, run in C.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from distnet.allreduce.mpi import validate
from distnet.allreduce.ops import SUM, ReduceOp, resolve_op


def native_allreduce(comm: Any, buf: np.ndarray, op: Any = SUM) -> None:
    """comm.Allreduce(MPI.IN_PLACE, buf, op)."""
    from mpi4py import MPI

    validate(buf)
    comm.Allreduce(MPI.IN_PLACE, buf, resolve_op(op).to_mpi())


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

    return NativeRequest(comm.Iallreduce(MPI.IN_PLACE, buf, op.to_mpi()))

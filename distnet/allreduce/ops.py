"""Reduction operators: our own constants, or mpi4py's ``MPI.SUM``-style ops, mapped to ufuncs.

The executor combines a received chunk into the buffer with ``ufunc(buf, chunk, out=buf)``, so
an op is just a NumPy ufunc plus the MPI op the `native` algorithm hands to Open MPI. Every op
here is commutative, which is what lets recursive doubling give bitwise-identical results on
both partners of an exchange (a + b == b + a exactly in IEEE arithmetic).

This module never imports mpi4py.MPI: an mpi4py op is recognised by its name, which needs MPI to
exist already (whoever passes `MPI.SUM` has initialised it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from distnet.common.errors import UserError


@dataclass(frozen=True)
class ReduceOp:
    """A commutative reduction: `ufunc` combines in place, `mpi_name` names the MPI twin."""

    name: str
    ufunc: np.ufunc
    mpi_name: str

    def to_mpi(self) -> Any:
        """The mpi4py op (imports MPI: only for callers that already run under MPI)."""
        from mpi4py import MPI

        return getattr(MPI, self.mpi_name)


SUM = ReduceOp("sum", np.add, "SUM")
PROD = ReduceOp("prod", np.multiply, "PROD")
MAX = ReduceOp("max", np.maximum, "MAX")
MIN = ReduceOp("min", np.minimum, "MIN")

OPS: dict[str, ReduceOp] = {o.name: o for o in (SUM, PROD, MAX, MIN)}
_BY_MPI_NAME = {o.mpi_name: o for o in (SUM, PROD, MAX, MIN)}


def resolve_op(op: object) -> ReduceOp:
    """A ReduceOp from ours, a name ("sum"), an mpi4py op (MPI.MAX) or None (SUM)."""
    if op is None:
        return SUM
    if isinstance(op, ReduceOp):
        return op
    if isinstance(op, str) and op.lower() in OPS:
        return OPS[op.lower()]
    if type(op).__name__ == "Op":  # an mpi4py op: compare against MPI's own predefined handles
        from mpi4py import MPI

        for mpi_name, ours in _BY_MPI_NAME.items():
            if op == getattr(MPI, mpi_name):
                return ours
    raise UserError(f"unsupported reduction op {op!r} (supported: sum, prod, max, min)")

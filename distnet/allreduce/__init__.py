"""Pluggable all-reduce algorithms.

Every algorithm has one contract, ``fn(comm, buf, op=SUM)``: reduce a 1-D contiguous NumPy
buffer in place across the ranks of ``comm``. Adding one is a file plus a ``register`` line below.
Importing this package never initialises MPI (the simulator imports the schedules).
"""

from distnet.allreduce.registry import ALGORITHMS, SCHEDULES, get, get_schedule, register

__all__ = ["ALGORITHMS", "SCHEDULES", "get", "get_schedule", "register"]

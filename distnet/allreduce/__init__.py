"""Pluggable all-reduce algorithms.

Every algorithm has one contract, ``fn(comm, buf, op=SUM)``: reduce a 1-D contiguous NumPy
buffer in place across the ranks of ``comm``. Adding one is a file plus a ``register`` line below.
Importing this package never initialises MPI (the simulator imports the schedules).
"""

from distnet.allreduce.auto import auto_allreduce
from distnet.allreduce.hierarchical import (
    hierarchical_allreduce,
    hierarchical_schedule,
    hierarchical_start,
)
from distnet.allreduce.mpi import start
from distnet.allreduce.naive import naive_allreduce, naive_schedule
from distnet.allreduce.native import native_allreduce, native_start
from distnet.allreduce.ops import MAX, MIN, PROD, SUM
from distnet.allreduce.rabenseifner import rabenseifner_allreduce, rabenseifner_schedule
from distnet.allreduce.recursive_doubling import (
    recursive_doubling_allreduce,
    recursive_doubling_schedule,
)
from distnet.allreduce.registry import (
    ALGORITHMS,
    NOT_REVOCABLE,
    SCHEDULES,
    get,
    get_schedule,
    register,
)
from distnet.allreduce.ring import (
    ring_allreduce,
    ring_pipelined_allreduce,
    ring_pipelined_schedule,
    ring_schedule,
)
from distnet.allreduce.shm import ShmAllreduce
from distnet.allreduce.tree import (
    tree_allreduce,
    tree_pipelined_allreduce,
    tree_pipelined_schedule,
    tree_schedule,
)

register("native", native_allreduce, start=native_start)
register("naive", naive_allreduce, naive_schedule)
register("ring", ring_allreduce, ring_schedule)
register("ring_pipelined", ring_pipelined_allreduce, ring_pipelined_schedule)
register("tree", tree_allreduce, tree_schedule)
register("tree_pipelined", tree_pipelined_allreduce, tree_pipelined_schedule)
register("recursive_doubling", recursive_doubling_allreduce, recursive_doubling_schedule)
register("rabenseifner", rabenseifner_allreduce, rabenseifner_schedule)
register("hierarchical", hierarchical_allreduce, hierarchical_schedule, start=hierarchical_start,
         revocable=False)  # its node part is shm
# Node-local, no schedule: its transfers are memory reads of a shared window, not messages (the
# simulator sees it as intra-node; see shm.py). The instance owns its bounded window cache.
register("shm", ShmAllreduce(), revocable=False)
register("auto", auto_allreduce)  # picks one of the above per size; no schedule of its own

__all__ = [
    "ALGORITHMS", "MAX", "MIN", "NOT_REVOCABLE", "PROD", "SCHEDULES", "SUM", "get", "get_schedule",
    "register", "start",
]

"""The explicit registry of all-reduce algorithms: name -> function, no magic discovery."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from distnet.common.errors import UserError
from distnet.common.names import lookup

# fn(comm, buf, op=SUM) reduces a 1-D contiguous NumPy buffer in place across comm's ranks.
AllreduceFn = Callable[..., None]
# builder(p, n, **options) -> Schedule; only algorithms defined by a schedule have one.
ScheduleBuilder = Callable[..., Any]
# start(comm, buf, op: ReduceOp) -> a request with test()/wait(): the non-blocking form of an
# algorithm that is not a plain schedule run (native's Iallreduce, hierarchical's node map).
Starter = Callable[..., Any]

# Filled once, by distnet/allreduce/__init__.py, at import: the registry, not a cache.
ALGORITHMS: dict[str, AllreduceFn] = {}
SCHEDULES: dict[str, ScheduleBuilder] = {}
STARTERS: dict[str, Starter] = {}
# Algorithms whose ranks wait outside MPI (on flags in shared memory): a revoked communicator
# cannot wake them, so fault-tolerant (ULFM) runs must not use them.
NOT_REVOCABLE: set[str] = set()


def register(name: str, fn: AllreduceFn, schedule: ScheduleBuilder | None = None,
             start: Starter | None = None, revocable: bool = True) -> AllreduceFn:
    """Add an algorithm, with its schedule builder and its own non-blocking start if it has
    them (an algorithm with a schedule but no `start` runs non-blocking as that schedule);
    `revocable=False` marks one that waits outside MPI. Duplicate names are refused."""
    if name in ALGORITHMS:
        raise ValueError(f"all-reduce algorithm {name!r} is already registered")
    ALGORITHMS[name] = fn
    if not revocable:
        NOT_REVOCABLE.add(name)
    if schedule is not None:
        SCHEDULES[name] = schedule
    if start is not None:
        STARTERS[name] = start
    return fn


def get(name: str) -> AllreduceFn:
    """The algorithm called `name`; an unknown name is a UserError listing the known ones."""
    return lookup(ALGORITHMS, name, "all-reduce algorithm")


def get_schedule(name: str) -> ScheduleBuilder:
    """The schedule builder of `name`; algorithms without one (native, auto) are refused."""
    try:
        return SCHEDULES[name]
    except KeyError:
        known = ", ".join(sorted(SCHEDULES))
        raise UserError(
            f"all-reduce algorithm {name!r} has no replayable schedule (known: {known})"
        ) from None

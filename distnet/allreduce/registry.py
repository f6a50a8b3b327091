"""The explicit registry of all-reduce algorithms: name -> function, no magic discovery."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from distnet.common.errors import UserError

# fn(comm, buf, op=SUM) reduces a 1-D contiguous NumPy buffer in place across comm's ranks.
AllreduceFn = Callable[..., None]
# builder(p, n, **options) -> Schedule; only algorithms defined by a schedule have one.
ScheduleBuilder = Callable[..., Any]

ALGORITHMS: dict[str, AllreduceFn] = {}
SCHEDULES: dict[str, ScheduleBuilder] = {}


def register(name: str, fn: AllreduceFn, schedule: ScheduleBuilder | None = None) -> AllreduceFn:
    """Add an algorithm (and, if it has one, its schedule builder); duplicate names are refused."""
    if name in ALGORITHMS:
        raise ValueError(f"all-reduce algorithm {name!r} is already registered")
    ALGORITHMS[name] = fn
    if schedule is not None:
        SCHEDULES[name] = schedule
    return fn


def get(name: str) -> AllreduceFn:
    """The algorithm called `name`; an unknown name is a UserError listing the known ones."""
    try:
        return ALGORITHMS[name]
    except KeyError:
        known = ", ".join(sorted(ALGORITHMS))
        raise UserError(f"unknown all-reduce algorithm {name!r} (known: {known})") from None


def get_schedule(name: str) -> ScheduleBuilder:
    """The schedule builder of `name`; algorithms without one (native, auto) are refused."""
    try:
        return SCHEDULES[name]
    except KeyError:
        known = ", ".join(sorted(SCHEDULES))
        raise UserError(
            f"all-reduce algorithm {name!r} has no replayable schedule (known: {known})"
        ) from None

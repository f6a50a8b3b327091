"""Refuse an input before allocating it when it cannot fit in memory.

The kernel's OOM killer ends a process with SIGKILL and no message, so anything whose size comes
from the user (a sample count, an array shape in a file header, a network spec) is estimated
first and refused with a line that says how much it needs and how much there is. The budget is
MemAvailable shared by the ranks of this node (Open MPI tells each rank how many there are),
overridable with DISTNET_MEMORY_BUDGET (bytes, e.g. for tests or a container limit).
"""

from __future__ import annotations

import os

from distnet.common.errors import UserError

BUDGET_ENV = "DISTNET_MEMORY_BUDGET"
FALLBACK_BYTES = 4 << 30  # where /proc/meminfo is missing (not Linux)


def _gib(n: float) -> str:
    return f"{n / (1 << 30):.3g} GiB" if n >= 1 << 28 else f"{n / (1 << 20):.3g} MiB"


def budget_bytes() -> int:
    """Bytes one process of this node may use: the override, else MemAvailable / local ranks."""
    raw = os.environ.get(BUDGET_ENV)
    if raw:
        try:
            value = int(raw)
        except ValueError:
            raise UserError(f"${BUDGET_ENV}={raw!r}: not a whole number of bytes") from None
        if value < 1:
            raise UserError(f"${BUDGET_ENV}={raw!r}: must be >= 1")
        return value
    available = FALLBACK_BYTES
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    try:
        local = max(1, int(os.environ.get("OMPI_COMM_WORLD_LOCAL_SIZE", "1")))
    except ValueError:
        local = 1
    return available // local


def check_fits(what: str, nbytes: float) -> None:
    """Raise a UserError naming `what` if nbytes exceeds this process's share of memory."""
    budget = budget_bytes()
    if not nbytes <= budget:  # also catches NaN
        raise UserError(f"{what} would need about {_gib(nbytes)} of memory, more than the "
                        f"{_gib(budget)} available to this process; use a smaller input")

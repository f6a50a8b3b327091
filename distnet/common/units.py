"""Byte sizes as people write them ('4KiB', '64MiB', '1MB'): one parser, one printer.

Pure Python and MPI-free, so the benchmarks and the topology CLI share it.
"""

from __future__ import annotations

import re

from distnet.common.errors import UserError

KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30
SIZE_UNITS = {"": 1, "b": 1, "kib": KIB, "mib": MIB, "gib": GIB,
              "kb": 10**3, "mb": 10**6, "gb": 10**9}


MAX_SIZE = 1 << 50  # no message of more than 1 PiB is simulated, benchmarked or projected


def parse_size(text: str) -> int:
    """'4KiB' -> 4096, '1MB' -> 1000000, '8' -> 8; units B/KiB/MiB/GiB/KB/MB/GB."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
    if m is None or m.group(2).lower() not in SIZE_UNITS:
        raise UserError(f"bad size {text!r} (use e.g. 8, 4KiB, 1MiB, 64MiB, 1MB)")
    value = float(m.group(1)) * SIZE_UNITS[m.group(2).lower()]
    if not value <= MAX_SIZE:  # also inf, from 400 digits
        raise UserError(f"size {text!r} is larger than {MAX_SIZE} bytes (1 PiB)")
    if value != int(value) or value < 1:
        raise UserError(f"size {text!r} is not a positive whole number of bytes")
    return int(value)


def human_bytes(n: int) -> str:
    """4096 -> '4KiB'; sizes that are not a whole number of KiB/MiB/GiB stay in bytes."""
    for unit, size in (("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return f"{n}B"

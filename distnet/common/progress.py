"""Progress bars for long work (tqdm), shown on rank 0 only and only when stderr is a terminal,
so logs, pipes and CI stay clean. Without a terminal (or without tqdm) `bar` returns a silent
stand-in with the same three methods, and callers never branch."""

from __future__ import annotations

import os
import sys
from typing import Any

# Set DISTNET_PROGRESS=0 to silence the bars even on a terminal.
ENV = "DISTNET_PROGRESS"


class _Silent:
    def write(self, line: str) -> None:
        """A line to standard output (tqdm's own write also clears and redraws its bar)."""
        print(line, flush=True)

    def update(self, n: int = 1) -> None:
        return None

    def set_postfix_str(self, s: str) -> None:
        return None

    def close(self) -> None:
        return None

    def __enter__(self) -> _Silent:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def enabled(rank: int = 0, stream: Any = None) -> bool:
    stream = sys.stderr if stream is None else stream
    if rank != 0 or os.environ.get(ENV, "1") == "0":
        return False
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or replaced stream
        return False


def bar(total: int | None, desc: str, rank: int = 0, unit: str = "it",
        leave: bool = False, show: bool = True) -> Any:
    """A tqdm bar on stderr, or a silent stand-in (not rank 0, not a terminal, no tqdm, or
    show=False: callers pass whether the work is long enough to deserve a bar)."""
    if not show or not enabled(rank):
        return _Silent()
    try:
        from tqdm import tqdm
    except ImportError:
        return _Silent()
    return tqdm(total=total, desc=desc, unit=unit, leave=leave, file=sys.stderr,
                dynamic_ncols=True, mininterval=0.2)

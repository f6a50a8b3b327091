"""Progress bars for long work (tqdm), shown on rank 0 only and only when stderr is a terminal,
so logs, pipes and CI stay clean. Without a terminal (or without tqdm) `bar` returns a silent
stand-in with the same methods, and callers never branch.

Under mpirun a rank's stderr is a pipe to the launcher, which forwards whole lines only, so a
bar could never be drawn through it. What counts then is the launcher's own stderr: when the
launcher is our parent on this host and its stderr is a terminal, the bar is drawn on that
terminal directly (the launcher's output and any redirection of it stay untouched).
"""

from __future__ import annotations

import os
import sys
from typing import Any

# Set DISTNET_PROGRESS=0 to silence the bars even on a terminal.
ENV = "DISTNET_PROGRESS"
# Set by mpirun/srun in every rank's environment.
LAUNCHER_VARIABLES = ("OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID")
_terminal: Any = None  # the stream bars are drawn on, once found (False: none)


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


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or replaced stream
        return False


def _launcher_terminal() -> Any:
    """The launcher's terminal (its stderr), opened for writing, if we run under one here."""
    if not any(v in os.environ for v in LAUNCHER_VARIABLES):
        return None
    try:
        device = os.readlink(f"/proc/{os.getppid()}/fd/2")
        if not device.startswith(("/dev/pts/", "/dev/tty")):
            return None
        return open(device, "w", encoding="utf-8")  # noqa: SIM115 (kept for the process)
    except OSError:  # no /proc, another host's launcher, no permission
        return None


def terminal(stream: Any = None) -> Any:
    """Where bars go: stderr if it is a terminal, else the launcher's terminal, else None."""
    global _terminal
    if stream is not None:
        return stream if _isatty(stream) else None
    if _isatty(sys.stderr):
        return sys.stderr
    if _terminal is None:
        _terminal = _launcher_terminal() or False
    return _terminal or None


def enabled(rank: int = 0, stream: Any = None) -> bool:
    if rank != 0 or os.environ.get(ENV, "1") == "0":
        return False
    return terminal(stream) is not None


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
    # delay: the launcher forwards rank 0's last log line a moment later; draw after it.
    return tqdm(total=total, desc=desc, unit=unit, leave=leave, file=terminal(),
                dynamic_ncols=True, mininterval=0.2, delay=0.5)

"""Run an MPI program so that bad input ends every rank promptly with one clear line.

Two kinds of failure need different handling:
- symmetric ones (every rank parses the same flags and reads the same file) are found by every
  rank; `agree` turns the errors of a phase into the same `AgreedError` on all ranks, which then
  all exit with status 2 and only rank 0 prints;
- a failure on some ranks only (a full disk on rank 0, a bug) cannot wait for the others: that
  rank prints one line and calls MPI_Abort, so nobody is left waiting in a collective forever.
  A plain return would not do: the failing rank would block in MPI_Finalize while the others
  block in their next collective.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

from distnet.common.abort import abort_job
from distnet.common.errors import UserError

T = TypeVar("T")

EXIT_USER_ERROR = 2
EXIT_BUG = 1


class AgreedError(UserError):
    """A UserError that every rank raises at the same point, so all can exit in order."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


def agree(comm: Any, phase: Callable[[], T]) -> T:
    """Run `phase` on every rank; if it failed anywhere, raise the first error on every rank."""
    error: str | None = None
    result: T | None = None
    try:
        result = phase()
    except UserError as exc:
        error = str(exc)
    except (OSError, ValueError, MemoryError) as exc:
        error = f"{type(exc).__name__}: {exc}"
    errors = comm.allgather(error) if comm.Get_size() > 1 else [error]
    first = next((e for e in errors if e is not None), None)
    if first is not None:
        raise AgreedError(first)
    return result  # type: ignore[return-value]


def run(main: Callable[[Any], int], prog: str) -> int:
    """Call main(comm) and translate failures into exit statuses (see the module docstring)."""
    from mpi4py import MPI

    from distnet.common.procgroup import mark

    comm = MPI.COMM_WORLD
    mark("started")
    try:
        status = main(comm)
        if status == 0:
            mark("done")  # this rank saw the whole run through (see procgroup.DONE_ENV)
        return status
    except AgreedError as exc:
        if comm.Get_rank() == 0:
            print(f"{prog}: error: {exc}", file=sys.stderr, flush=True)
        return exc.status
    except UserError as exc:
        _wait_for_rank_0(comm)
        print(f"{prog}: error: {exc}", file=sys.stderr, flush=True)
        if comm.Get_size() > 1:
            abort_job(comm, EXIT_USER_ERROR)
        return EXIT_USER_ERROR
    except _AbortAll as exc:
        _wait_for_rank_0(comm)
        print(f"{prog}: error (rank {comm.Get_rank()}): {exc}", file=sys.stderr, flush=True)
        abort_job(comm, exc.status)
    except KeyboardInterrupt:
        abort_job(comm, 130)
    except Exception:
        traceback.print_exc()
        sys.stderr.flush()
        if comm.Get_size() > 1:
            abort_job(comm, EXIT_BUG)
        return EXIT_BUG


ABORT_GRACE_S = 3.0


def _wait_for_rank_0(comm: Any) -> None:
    """An unagreed error that strikes every rank at once (mid-run, after the agreed checks)
    would be printed once per rank. Rank 0 reports at once and its MPI_Abort ends the others;
    any other rank waits a moment first, so it speaks only when rank 0 did not."""
    if comm.Get_rank() != 0 and comm.Get_size() > 1:
        import time

        time.sleep(ABORT_GRACE_S)


class _AbortAll(Exception):
    def __init__(self, message: str, status: int = EXIT_USER_ERROR) -> None:
        super().__init__(message)
        self.status = status


def abort_all(message: str, status: int = EXIT_USER_ERROR) -> _AbortAll:
    """An error found by one rank alone mid-run: raise the returned exception to abort the job."""
    return _AbortAll(message, status)

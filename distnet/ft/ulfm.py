"""ULFM (User-Level Failure Mitigation) in a few calls: detect, agree, revoke, shrink.

Open MPI implements ULFM only when mpirun runs with `--with-ft ulfm`, and a dead peer is noticed
reliably only over TCP (`--mca btl tcp,self`): over shared memory the survivors can wait for it
forever. With the error handler set to ERRORS_RETURN, an operation that involves a dead rank
raises MPI.Exception with class ERR_PROC_FAILED; once any rank revokes the communicator every
pending and future operation on it raises ERR_REVOKED, which is how one rank's discovery reaches
all the others. Agree and Shrink still work on a revoked communicator and tolerate failures that
happen while they run.
"""

from __future__ import annotations

import os
from typing import Any

from distnet.allreduce.mpi import comm_state
from distnet.common.abort import under_ulfm
from distnet.common.errors import UserError


def check_support() -> None:
    """Raise a UserError unless this process runs under a ULFM-enabled mpirun over TCP."""
    from mpi4py import MPI

    if not hasattr(MPI.Comm, "Shrink"):
        raise UserError("--ft ulfm: this MPI library has no ULFM (MPI_Comm_shrink missing)")
    if not under_ulfm():
        raise UserError("--ft ulfm needs `mpirun --with-ft ulfm --mca btl tcp,self` "
                        "(or launch/ft.sh)")
    btl = os.environ.get("OMPI_MCA_btl", "")
    if not btl or "sm" in btl.replace("self", "").split(",") or "vader" in btl:
        raise UserError("--ft ulfm needs `--mca btl tcp,self`: over shared memory a dead rank "
                        "can hang the survivors")


def failure_classes() -> tuple[int, ...]:
    """Error classes that mean "a peer failed" under ULFM.

    ERR_OTHER is among them because Open MPI's non-blocking collectives (libnbc, behind
    Iallreduce and so the bucketed native all-reduce) abort their schedule on a dead peer's
    ERR_PROC_FAILED and report ERR_OTHER from Wait/Test, depending on timing. Treating it as a
    failure is safe: recovery revokes, shrinks (to the same members if nobody died) and redoes
    the step, at most MAX_RECOVERIES_PER_STEP times before the job stops.
    ERR_IN_STATUS likewise: a schedule's steps end in Waitall, which reports a dead peer's
    ERR_PROC_FAILED in the failed request's status and returns ERR_IN_STATUS itself (seen when
    a rank dies inside a bucketed ring or a compressor's reductions).
    """
    from mpi4py import MPI

    return (MPI.ERR_PROC_FAILED, MPI.ERR_PROC_FAILED_PENDING, MPI.ERR_REVOKED, MPI.ERR_OTHER,
            MPI.ERR_IN_STATUS)


def is_failure(exc: BaseException) -> bool:
    from mpi4py import MPI

    return isinstance(exc, MPI.Exception) and exc.Get_error_class() in failure_classes()


def harden(comm: Any) -> Any:
    """A private duplicate whose errors raise instead of aborting the job, on which `auto`
    picks only algorithms a revoke can wake."""
    return _tolerant(comm.Dup())


def _tolerant(comm: Any) -> Any:
    """Make a new communicator fault-tolerant (a Dup or a Shrink carries neither setting)."""
    from mpi4py import MPI

    comm.Set_errhandler(MPI.ERRORS_RETURN)
    comm_state(comm).revocable_only = True
    return comm


class Recovering(Exception):
    """The step's agreement met a failure or a peer that is already recovering."""


# The commit vote is a bit mask (MPI_Comm_agree ANDs it): bit 0 "my checks passed", bit 1 "I am
# committing, not recovering". A revoked communicator wakes every rank out of its collectives
# but not out of an agreement: the ranks already voting on the commit would then wait in it
# while the others call Shrink, whose own internal agreement could be matched with theirs (a
# half-committed step, then a shrink that never completes). So recovery starts with a vote too
# (`join_recovery`), which meets the commit vote of the ranks still in it and tells them.
VOTE_OK, VOTE_COMMITTING = 1, 2


def commit_vote(comm: Any, ok: bool) -> bool:
    """The AND of `ok` over the live ranks, the same on all of them; raises Recovering when a
    rank failed or another rank is recovering (then everybody recovers)."""
    try:
        flag = int(comm.Agree(VOTE_COMMITTING | (VOTE_OK if ok else 0)))
    except Exception as exc:
        if is_failure(exc):
            raise Recovering("a rank failed during the commit vote") from None
        raise
    if not flag & VOTE_COMMITTING:
        raise Recovering("a peer is recovering")
    return bool(flag & VOTE_OK)


def join_recovery(comm: Any) -> None:
    """The recovery's vote: meets the commit vote of ranks still in it (see above)."""
    try:
        comm.Agree(VOTE_OK)
    except Exception as exc:
        if not is_failure(exc):
            raise


def revoke(comm: Any) -> None:
    try:
        comm.Revoke()
    except Exception as exc:  # already revoked is fine
        if not is_failure(exc):
            raise


def shrink(comm: Any, members: list[int]) -> tuple[Any, list[int], list[int]]:
    """Shrink comm to its live ranks.

    `members[i]` names comm's rank i (its MPI_COMM_WORLD rank); returns the new communicator,
    the names of its ranks in order, and the names of the ranks that were dropped.
    """
    from mpi4py import MPI

    new = _tolerant(comm.Shrink())
    old_ranks = list(range(comm.Get_size()))
    where = MPI.Group.Translate_ranks(comm.Get_group(), old_ranks, new.Get_group())
    kept = sorted((w, members[i]) for i, w in enumerate(where) if w != MPI.UNDEFINED)
    failed = [members[i] for i, w in enumerate(where) if w == MPI.UNDEFINED]
    return new, [m for _, m in kept], failed

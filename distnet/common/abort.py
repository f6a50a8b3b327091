"""End the whole job from a rank that gives up: MPI_Abort, except under Open MPI's ULFM runtime.

Under `mpirun --with-ft ulfm`, prterun tolerates failed ranks by design, and MPI_Abort counts as
one: only the caller ends while the others go on. Worse, several ranks calling MPI_Abort at
once can deadlock prterun on a mutex, so the job never ends (measured on Open MPI 5: 4 of 10
runs of four ranks that all aborted hung; 0 of 22 without --with-ft). What does end such a job
is a non-zero exit status: prterun takes the first as a failed rank and tears the whole job
down at the second, hung and SIGSTOPped ranks included (0 of 23 hung). Every abort path under
ULFM is taken by every live rank that sees the fault, so there the rank exits with the status.
A lone survivor (a world of 2) cannot end the job this way either; its launcher's timeout must.
"""

from __future__ import annotations

import os
import sys
from typing import Any, NoReturn

FT_ENV = "OMPI_MCA_mpi_ft_enable"  # set in every rank by `mpirun --with-ft ulfm`


def under_ulfm() -> bool:
    """True when this rank runs under a ULFM-enabled Open MPI runtime."""
    return os.environ.get(FT_ENV, "").lower() in ("1", "true", "yes")


def abort_job(comm: Any, status: int) -> NoReturn:
    """End the job with `status` (the caller has already printed why)."""
    sys.stdout.flush()
    sys.stderr.flush()
    if not under_ulfm():
        comm.Abort(status)
    os._exit(status)  # no atexit, no MPI_Finalize: a peer may be hung in a collective

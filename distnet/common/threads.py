"""Keep ranks × BLAS threads within the cores: oversubscribed BLAS threads can halve throughput.

Must run before NumPy is imported, because BLAS reads these variables once at load time.
"""

from __future__ import annotations

import os

_BLAS_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
              "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")


def local_ranks() -> int:
    """Ranks sharing this machine, as told by the MPI launcher (1 outside mpirun)."""
    for var in ("OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "SLURM_NTASKS_PER_NODE"):
        value = os.environ.get(var, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 1


def allowed_cpus() -> list[int]:
    """The CPUs this process may run on, sorted (all of them where affinity is not available):
    one when the launcher bound the rank to a core, every CPU when it did not."""
    getaffinity = getattr(os, "sched_getaffinity", None)
    if getaffinity is not None:
        return sorted(getaffinity(0))
    return list(range(os.cpu_count() or 1))


def limit_blas_threads() -> int:
    """Set every BLAS thread variable the user left unset to max(1, cores // local ranks)."""
    threads = max(1, len(allowed_cpus()) // local_ranks())
    for var in _BLAS_VARS:
        os.environ.setdefault(var, str(threads))
    return int(os.environ["OMP_NUM_THREADS"])

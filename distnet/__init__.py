"""distnet: a NumPy MLP trained data-parallel over MPI, with pluggable all-reduce algorithms.

Importing the package must stay cheap and MPI-free: `topology/` imports the all-reduce schedules
without ever starting MPI.

It sets one environment default before anything can start MPI: Open MPI's UCX one-sided
component prints errors on `MPI_Win_allocate_shared` (the `shm` all-reduce's window) on a machine
without UCX-capable devices, so unless the user chose otherwise the `sm` component serves
windows (`OMPI_MCA_osc=^ucx`, the same as `mpirun --mca osc ^ucx`). Open MPI reads it at
MPI_Init, so it works for every entry point that imports distnet before mpi4py.MPI.

And one for a process no launcher started (a singleton: `python -m distnet.train` alone, or
the unit tests): Open MPI 5 leaves the shared-memory transport's segment (16 MiB, sparse) in
/dev/shm after every singleton run, even one that finalizes cleanly. Such a process points
`btl_sm_backing_directory` at a directory of its own, removed at exit (after MPI_Finalize,
which mpi4py registers later and so runs first). The setting only says where the segments
live, so an mpirun started from this process (which inherits it) still works.
"""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("OMPI_MCA_osc", "^ucx")
# Set by mpirun/prterun (PMIx), by PMI-1/2 starters and by srun in a job step.
_LAUNCHED = ("PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "PMI_RANK", "PMI_SIZE", "SLURM_PROCID")
_SEGMENTS = "OMPI_MCA_btl_sm_backing_directory"
if not any(name in os.environ for name in _LAUNCHED) and _SEGMENTS not in os.environ:
    try:
        _own = tempfile.mkdtemp(prefix="distnet-sm-",
                                dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    except OSError:  # no writable place: Open MPI's default stays
        pass
    else:
        os.environ[_SEGMENTS] = _own
        atexit.register(shutil.rmtree, _own, ignore_errors=True)

__version__ = "0.1.0"

"""distnet: a NumPy MLP trained data-parallel over MPI, with pluggable all-reduce algorithms.

Importing the package must stay cheap and MPI-free: `topology/` imports the all-reduce schedules
without ever starting MPI.

It sets one environment default before anything can start MPI: Open MPI's UCX one-sided
component prints errors on `MPI_Win_allocate_shared` (the `shm` all-reduce's window) on a machine
without UCX-capable devices, so unless the user chose otherwise the `sm` component serves
windows (`OMPI_MCA_osc=^ucx`, the same as `mpirun --mca osc ^ucx`). Open MPI reads it at
MPI_Init, so it works for every entry point that imports distnet before mpi4py.MPI.
"""

import os

os.environ.setdefault("OMPI_MCA_osc", "^ucx")

__version__ = "0.1.0"

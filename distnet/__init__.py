"""distnet: a NumPy MLP trained data-parallel over MPI, with pluggable all-reduce algorithms.

Importing the package must stay cheap and MPI-free: `topology/` imports the all-reduce schedules
without ever starting MPI.
"""

__version__ = "0.1.0"

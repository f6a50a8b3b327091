"""Run under mpirun on emulated hosts: every registered all-reduce against its closed form and
against comm.Allreduce, on lengths that do and do not divide by the world size. Prints one
`oracle ok ...` line from rank 0 when every rank agrees."""

from __future__ import annotations

import os

import numpy as np
from mpi4py import MPI

from distnet.allreduce import ALGORITHMS


def main() -> None:
    comm = MPI.COMM_WORLD
    p, r = comm.size, comm.rank
    checked = 0
    for name in sorted(ALGORITHMS):
        for n in (1, p + 1, 300_001):
            idx = np.arange(n)
            buf = (r + idx % 5).astype(np.float32)
            ALGORITHMS[name](comm, buf)
            want = (p * (p - 1) / 2 + p * (idx % 5)).astype(np.float32)
            assert np.array_equal(buf, want), f"{name} n={n} rank {r}"
            rng = np.random.default_rng(7 + r)
            buf = rng.integers(-1000, 1000, size=n).astype(np.float64)
            ref = buf.copy()
            comm.Allreduce(MPI.IN_PLACE, ref)
            ALGORITHMS[name](comm, buf)
            assert np.array_equal(buf, ref), f"{name} n={n} differs from Allreduce"
            checked += 2
    hosts = comm.gather(os.uname().nodename)
    nodes = comm.allreduce(comm.Split_type(MPI.COMM_TYPE_SHARED).rank == 0, op=MPI.SUM)
    if r == 0:
        print(f"oracle ok {checked} checks on {p} ranks, hosts {sorted(set(hosts or []))}, "
              f"{nodes} shared-memory nodes", flush=True)


if __name__ == "__main__":
    main()

"""A ring all-reduce by hand: what distnet/allreduce/ring.py does, without the machinery.

    mpirun -n 4 python docs/examples/ring_by_hand.py

Cut the buffer into p chunks. In each of p - 1 reduce-scatter steps every rank sends one chunk
to its right neighbour and adds the chunk it receives from its left one into its own copy;
afterwards rank r holds the finished sum of chunk r + 1 (mod p). In p - 1 all-gather steps the
finished chunks travel on around the ring, overwriting. Each rank sends 2(p - 1) messages of
about n/p elements: 2(p-1)α + 2((p-1)/p)nβ + ((p-1)/p)nγ.
"""

import numpy as np
from mpi4py import MPI

comm = MPI.COMM_WORLD
rank, p = comm.Get_rank(), comm.Get_size()
right, left = (rank + 1) % p, (rank - 1) % p

n = 1_000_003  # any length: the chunks differ by at most one element
buf = np.arange(n, dtype=np.float64) + rank  # rank r contributes i + r at index i
bounds = [c * n // p for c in range(p + 1)]  # chunk c is buf[bounds[c]:bounds[c + 1]]
incoming = np.empty(-(-n // p))  # where a partial sum lands before it is added


def chunk(c: int) -> np.ndarray:
    """Chunk c mod p of buf: a view, so Sendrecv reads and writes buf itself (no copy)."""
    c %= p
    return buf[bounds[c]:bounds[c + 1]]


for s in range(p - 1):  # reduce-scatter: send chunk r - s, receive and add chunk r - s - 1
    mine, theirs = chunk(rank - s), chunk(rank - s - 1)
    landing = incoming[:theirs.size]
    comm.Sendrecv(mine, dest=right, recvbuf=landing, source=left)
    theirs += landing
for s in range(p - 1):  # all-gather: pass finished chunk r + 1 - s on, receive chunk r - s
    comm.Sendrecv(chunk(rank + 1 - s), dest=right, recvbuf=chunk(rank - s), source=left)

expected = p * np.arange(n) + p * (p - 1) / 2  # closed form: sum over r of (i + r)
assert np.array_equal(buf, expected), f"rank {rank}: wrong sum"
if rank == 0:
    print(f"ring all-reduce of {n} elements on {p} ranks matches the closed form "
          f"({2 * (p - 1)} messages per rank)")

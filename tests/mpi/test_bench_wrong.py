"""The bench's #wrong column counts elements that differ from the closed form."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.mark.mpi(min_size=1)
def test_wrong_elements_counted_in_place_and_out_of_place() -> None:
    from mpi4py import MPI

    from distnet.bench import sweep

    comm = MPI.COMM_WORLD
    p = comm.size

    def broken(c: object, buf: np.ndarray) -> None:
        comm.Allreduce(MPI.IN_PLACE, buf)
        buf[3:5] += 1  # two wrong elements on every rank

    n = 64
    base = (np.arange(n) % sweep.PATTERN_PERIOD).astype(np.float32)
    expected = base * p + p * (p + 1) // 2
    buf = np.empty_like(base)
    native = sweep.available_algorithms()["native"]
    t, wrong = sweep.time_algorithm(comm, native, base, buf, expected, 3, 1)
    assert wrong == 0 and t.shape == (3,)
    _, wrong = sweep.time_algorithm(comm, broken, base, buf, expected, 3, 1)
    assert wrong == 2 * p
    _, wrong = sweep.time_algorithm(comm, broken, base, buf, expected, 3, 1,
                                    oop=sweep.out_of_place_fn("broken", broken))
    assert wrong == 2 * p
    _, wrong = sweep.time_algorithm(comm, native, base, buf, expected, 3, 1,
                                    oop=sweep.out_of_place_fn("native", native))
    assert wrong == 0

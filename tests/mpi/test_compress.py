"""16-bit wire types through every all-reduce, and every compressor over real MPI."""

from __future__ import annotations

import hashlib

import ml_dtypes
import numpy as np
import pytest

from distnet.allreduce import ALGORITHMS, start
from distnet.compress import COMPRESSORS, Tensor, get

NAMES = sorted(ALGORITHMS)
NARROW = [np.float16, ml_dtypes.bfloat16]


def _comm():
    from mpi4py import MPI

    return MPI.COMM_WORLD


def _same_on_all_ranks(comm, buf: np.ndarray) -> bool:
    digest = hashlib.sha256(buf.tobytes()).hexdigest()
    return len(set(comm.allgather(digest))) == 1


@pytest.mark.mpi(min_size=1)
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", NARROW)
def test_narrow_types_closed_form_and_bitwise(name: str, dtype: type) -> None:
    comm = _comm()
    p, r = comm.size, comm.rank
    for n in sorted({0, 1, p + 1, 13, 4099}):
        idx = np.arange(n)
        expected = (p * (p - 1) / 2 + p * (idx % 5)).astype(dtype)  # small integers: exact
        buf = (r + idx % 5).astype(dtype)
        ALGORITHMS[name](comm, buf)
        assert np.array_equal(buf, expected), f"{name} n={n}"
        buf = (r + idx % 5).astype(dtype)
        start(comm, buf, name).wait()
        assert np.array_equal(buf, expected), f"{name} n={n} (non-blocking)"
        buf = np.random.default_rng(3 + r).standard_normal(n).astype(dtype)
        exact = sum(np.random.default_rng(3 + k).standard_normal(n).astype(dtype)
                    .astype(np.float64) for k in range(p))
        ALGORITHMS[name](comm, buf)
        assert _same_on_all_ranks(comm, buf), f"{name} n={n}"
        tol = 2.0 ** (-10 if dtype is np.float16 else -7) * p * (np.abs(exact) + 3)
        assert np.all(np.abs(buf.astype(np.float64) - exact) <= tol)


TENSORS = [Tensor(0, (50, 40)), Tensor(2000, (40,)), Tensor(2040, (40, 7)), Tensor(2320, (7,))]
N = 2327


@pytest.mark.mpi(min_size=1)
@pytest.mark.parametrize("name", ["native", "ring", "auto"])
@pytest.mark.parametrize("compressor", sorted(COMPRESSORS))
@pytest.mark.parametrize("buckets", [False, True])
def test_compressors_bitwise_identical_and_close(name: str, compressor: str,
                                                 buckets: bool) -> None:
    comm = _comm()
    p, r = comm.size, comm.rank
    ranges = [(1500, N), (0, 1500)] if buckets else [(0, N)]
    grads = np.zeros(N, dtype=np.float32)
    comp = get(compressor)(grads, TENSORS, ranges, rank=4, seed=0)
    for step in range(3):
        parts = [np.random.default_rng(100 * step + k).standard_normal(N).astype(np.float32)
                 for k in range(p)]
        grads[...] = parts[r]
        handles = [comp.start(comm, lo, hi, name) for lo, hi in ranges]
        for h in handles:
            h.wait()
        comp.commit()
        assert _same_on_all_ranks(comm, grads), f"{compressor} over {name}, step {step}"
        exact = np.sum(parts, axis=0, dtype=np.float64)
        if compressor in ("none", "fp16", "bf16"):
            rel = {"none": 1e-5, "fp16": 2e-3, "bf16": 2e-2}[compressor]
            assert np.allclose(grads, exact, rtol=rel, atol=rel * p)
        else:  # lossy but correlated with the true sum; biases exact up to rounding
            bias = slice(2000, 2040)
            assert np.allclose(grads[bias], exact[bias], rtol=1e-5, atol=1e-5 * p)
            assert float(np.dot(grads, exact)) > 0

"""Every registered all-reduce against MPI's own and the closed form, on every world size."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from distnet.allreduce import ALGORITHMS, MAX, start
from distnet.allreduce.mpi import set_length_check
from distnet.common.errors import UserError

NAMES = sorted(ALGORITHMS)
DTYPES = [np.float32, np.float64]


def _comm():
    from mpi4py import MPI

    return MPI.COMM_WORLD


def _lengths(p: int) -> list[int]:
    return sorted({0, 1, max(p - 1, 0), p, p + 1, 13, 101, 7919, 300_001})


def _same_on_all_ranks(comm, buf: np.ndarray) -> bool:
    digest = hashlib.sha256(buf.tobytes()).hexdigest()
    return len(set(comm.allgather(digest))) == 1


@pytest.mark.mpi(min_size=1)
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_matches_closed_form_and_native(name: str, dtype: type) -> None:
    from mpi4py import MPI

    comm = _comm()
    p, r = comm.size, comm.rank
    fn = ALGORITHMS[name]
    rng = np.random.default_rng(100 + r)
    for n in _lengths(p):
        idx = np.arange(n)
        buf = (r + idx % 5).astype(dtype)
        fn(comm, buf)
        expected = p * (p - 1) / 2 + p * (idx % 5)  # sum of ranks, plus p copies of i mod 5
        assert np.array_equal(buf, expected.astype(dtype)), f"{name} n={n}"

        # Integer values: every summation order is exact, so native must agree bit for bit.
        buf = rng.integers(-1000, 1000, size=n).astype(dtype)
        ref = buf.copy()
        comm.Allreduce(MPI.IN_PLACE, ref, op=MPI.SUM)
        fn(comm, buf)
        assert np.array_equal(buf, ref), f"{name} n={n} differs from comm.Allreduce"


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("name", NAMES)
def test_bitwise_identical_across_ranks(name: str) -> None:
    from mpi4py import MPI

    comm = _comm()
    for dtype in DTYPES:
        # Non-integers: the summation order matters, so equality across ranks is a real check.
        buf = np.random.default_rng(7 + comm.rank).standard_normal(10_007).astype(dtype)
        ref = buf.copy()
        comm.Allreduce(MPI.IN_PLACE, ref, op=MPI.SUM)
        ALGORITHMS[name](comm, buf)
        assert _same_on_all_ranks(comm, buf), name
        assert np.allclose(buf, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.mpi(min_size=1)
@pytest.mark.parametrize("name", NAMES)
def test_max_min_prod(name: str) -> None:
    from mpi4py import MPI

    comm = _comm()
    p, r = comm.size, comm.rank
    n = 2 * p + 3
    idx = np.arange(n)
    for op in (MAX, MPI.MAX):
        buf = (r - idx % 3).astype(np.float64)
        ALGORITHMS[name](comm, buf, op=op)
        assert np.array_equal(buf, p - 1 - idx % 3)
    buf = (r + idx).astype(np.float64)
    ALGORITHMS[name](comm, buf, op=MPI.MIN)
    assert np.array_equal(buf, idx)
    buf = np.where(idx % p == r, 2.0, 1.0)
    ALGORITHMS[name](comm, buf, op="prod")
    assert np.array_equal(buf, np.full(n, 2.0))


@pytest.mark.mpi(min_size=1)
@pytest.mark.parametrize("name", NAMES)
def test_bad_buffers_raise_before_communicating(name: str) -> None:
    comm = _comm()
    fn = ALGORITHMS[name]
    bad: list[object] = [
        np.zeros((2, 3)),  # not 1-D
        np.zeros(10)[::2],  # not contiguous
        np.zeros(4, dtype=np.int32),  # unsupported dtype
        [1.0, 2.0],  # not an ndarray
    ]
    for b in bad:
        with pytest.raises((UserError, ValueError, TypeError)):
            fn(comm, b)
    with pytest.raises(UserError):
        fn(comm, np.zeros(3), op="xor")
    comm.Barrier()  # every rank raised locally; nobody is left waiting on a message


@pytest.mark.mpi(min_size=2)
def test_length_mismatch_is_reported_not_hung() -> None:
    comm = _comm()
    set_length_check(comm, True)
    try:
        with pytest.raises(UserError, match="lengths differ"):
            ALGORITHMS["ring"](comm, np.zeros(10 + comm.rank))
        buf = np.ones(10)
        ALGORITHMS["ring"](comm, buf)  # equal lengths pass the check
        assert np.all(buf == comm.size)
    finally:
        set_length_check(comm, False)


@pytest.mark.mpi(min_size=1)
@pytest.mark.parametrize("name", NAMES)
def test_two_concurrent_handles(name: str) -> None:
    comm = _comm()
    p, r = comm.size, comm.rank
    small = np.full(1001, r, dtype=np.float64)
    large = np.arange(200_003, dtype=np.float32) % 3 + r
    h1 = start(comm, small, name)
    h2 = start(comm, large, name)
    done = [False, False]
    for _ in range(1_000_000):  # busy-poll both as a bucketing trainer would; bounded
        done = [done[0] or h1.test(), done[1] or h2.test()]
        if all(done):
            break
    h2.wait()
    h1.wait()
    assert np.all(small == p * (p - 1) / 2)
    expected = p * (p - 1) / 2 + p * (np.arange(200_003) % 3)
    assert np.array_equal(large, expected.astype(np.float32))
    # handles started later reuse the same buffers: the cached binding must still be right
    h = start(comm, small, name)
    h.wait()
    assert np.all(small == p * p * (p - 1) / 2)


@pytest.mark.mpi(min_size=1)
def test_unknown_algorithm_lists_known() -> None:
    with pytest.raises(UserError, match="ring"):
        start(_comm(), np.zeros(3), "no_such_algorithm")


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("k", [1, 2, 3])
def test_hierarchical_emulated_nodes(k: int, monkeypatch: pytest.MonkeyPatch) -> None:
    from distnet.allreduce.hierarchical import hierarchical_allreduce, node_map

    comm = _comm()
    p, r = comm.size, comm.rank
    assert node_map(comm, ranks_per_node=k) == tuple(q // k for q in range(p))
    buf = np.arange(1000, dtype=np.float64) + r
    hierarchical_allreduce(comm, buf, ranks_per_node=k)
    assert np.array_equal(buf, p * np.arange(1000) + p * (p - 1) / 2)
    assert _same_on_all_ranks(comm, buf)
    monkeypatch.setenv("DISTNET_RANKS_PER_NODE", str(k))  # the env route, via the registry
    fresh = comm.Dup()  # the setting is agreed once per communicator
    try:
        buf = np.full(77, float(r))
        ALGORITHMS["hierarchical"](fresh, buf)
        assert np.all(buf == p * (p - 1) / 2)
        assert node_map(fresh) == tuple(q // k for q in range(p))
    finally:
        fresh.Free()


@pytest.mark.mpi(min_size=2)
def test_ranks_per_node_set_on_some_ranks_only_is_one_error_everywhere(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Another host's ranks do not see a shell variable mpirun was not told to pass (-x)."""
    from distnet.allreduce.hierarchical import node_map

    comm = _comm()
    if comm.rank == 1:
        monkeypatch.setenv("DISTNET_RANKS_PER_NODE", "2")
    else:
        monkeypatch.delenv("DISTNET_RANKS_PER_NODE", raising=False)
    fresh = comm.Dup()
    try:
        with pytest.raises(UserError, match="DISTNET_RANKS_PER_NODE differs between ranks"):
            node_map(fresh)
    finally:
        fresh.Free()


@pytest.mark.mpi(min_size=1)
@pytest.mark.parametrize("segment_elems", [3, 100])
def test_ring_pipelined_with_small_segments(segment_elems: int) -> None:
    # Segments are steps of their own: both ends cut them from the same schedule, blocking or not.
    from distnet.allreduce.mpi import execute, start_schedule
    from distnet.allreduce.ring import ring_pipelined_schedule

    comm = _comm()
    p, r = comm.size, comm.rank
    for n in (0, 1, p + 1, 150, 1001):
        want = p * np.arange(n) + p * (p - 1) / 2
        buf = np.arange(n, dtype=np.float64) + r
        execute(comm, buf, ring_pipelined_schedule, segment_elems=segment_elems)
        assert np.array_equal(buf, want), f"n={n}"
        buf = np.arange(n, dtype=np.float32) + r
        start_schedule(comm, buf, ring_pipelined_schedule, segment_elems=segment_elems).wait()
        assert np.array_equal(buf, want.astype(np.float32)), f"n={n} non-blocking"


@pytest.mark.mpi(min_size=1)
def test_fresh_views_of_one_buffer_share_a_compiled_run() -> None:
    # The Bucketer slices its gradient buffer anew every step: the run is found by address.
    from distnet.allreduce.mpi import comm_state

    comm = _comm()
    p = comm.size
    fresh = comm.Dup()
    try:
        grads = np.zeros(1000)
        for step in range(3):
            view = grads[100:600]
            view[:] = step + 1
            ALGORITHMS["ring"](fresh, view)
            assert np.all(view == p * (step + 1))
        assert len(comm_state(fresh).runs) == 1
        ALGORITHMS["ring"](fresh, grads[100:601])  # another length: another run
        assert len(comm_state(fresh).runs) == 2
    finally:
        fresh.Free()


@pytest.mark.mpi(min_size=1)
def test_execute_runs_a_schedule_object() -> None:
    from distnet.allreduce.mpi import execute
    from distnet.allreduce.schedule import from_steps, make_step

    comm = _comm()
    p, r = comm.size, comm.rank
    # A hand-written schedule: everyone adds into rank 0 in one step, then 0 copies out one by one.
    others = list(range(1, p))
    steps = [make_step(others, 0, 0, 5, True)] + [make_step(0, q, 0, 5, False) for q in others]
    sched = from_steps("custom", p, 5, steps if p > 1 else [])
    buf = np.full(5, float(r + 1))
    execute(comm, buf, sched)
    assert np.all(buf == p * (p + 1) / 2)
    with pytest.raises(UserError, match="p="):
        execute(comm, np.zeros(6), sched)  # built for n=5: refused before any message

"""auto and Bucketer against one comm.Allreduce: exact (integer-valued float64 sums)."""

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from distnet.allreduce import auto
from distnet.allreduce.bucket import Bucketer
from distnet.common.errors import UserError


def _comm():
    from mpi4py import MPI

    return MPI.COMM_WORLD


def _data(n: int, rank: int, seed: int) -> np.ndarray:
    # Integer-valued so that every summation order gives the same bits.
    rng = np.random.default_rng([seed, rank])
    return rng.integers(-1000, 1000, size=n).astype(np.float64)


@contextmanager
def _tune_file(monkeypatch: pytest.MonkeyPatch, text: str) -> Iterator[None]:
    """This rank's tune file holds `text` while the block runs. One private directory per
    rank: pytest's tmp_path numbering is not safe across ranks."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "tune.json"
        path.write_text(text)
        monkeypatch.setenv(auto.TUNE_ENV, str(path))
        yield


def _reference(comm, x: np.ndarray) -> np.ndarray:
    from mpi4py import MPI

    ref = x.copy()
    comm.Allreduce(MPI.IN_PLACE, ref)
    return ref


@contextmanager
def _fresh(comm) -> Iterator:
    """A Dup of comm for the block, freed after it: auto keeps its table and choices per
    communicator, so a test that needs a clean state starts from a new one."""
    dup = comm.Dup()
    try:
        yield dup
    finally:
        dup.Free()


def _auto_is_exact(comm, on, n: int, seed: int) -> np.ndarray:
    """auto on communicator `on` (comm or a copy) sums this rank's data exactly."""
    x = _data(n, comm.rank, seed=seed)
    ref = _reference(comm, x)
    auto.auto_allreduce(on, x)
    assert np.array_equal(x, ref)
    return x


@pytest.mark.mpi(min_size=1)
@pytest.mark.parametrize("n", [1, 3, 7, 1000, 4099, 300_001])
def test_auto_matches_native(n: int) -> None:
    comm = _comm()
    _auto_is_exact(comm, comm, n, seed=n)


@pytest.mark.mpi(min_size=2)
def test_auto_agrees_despite_differing_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each rank reads a different table; all must run rank 0's choice (no deadlock)."""
    comm = _comm()
    known = sorted(auto.candidates())
    mine = known[comm.rank % len(known)]
    with _tune_file(monkeypatch, json.dumps({str(comm.size): [[1 << 30, mine]]})):
        # the table is cached per communicator; start from a clean one
        with _fresh(comm) as fresh:
            choice = auto.resolve(fresh, 800)
            assert comm.allgather(choice) == [known[0]] * comm.size
            _auto_is_exact(comm, fresh, 100, seed=5)


@pytest.mark.mpi(min_size=2)
def test_damaged_table_on_rank_0_stops_every_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only rank 0 reads the file; every rank must raise, not wait for a broadcast."""
    comm = _comm()
    good = {str(comm.size): [[1 << 30, "native"]]}
    with _tune_file(monkeypatch, '{"2": [[1, NaN]]}' if comm.rank == 0 else json.dumps(good)):
        with _fresh(comm) as fresh:
            with pytest.raises(UserError, match="not valid JSON"):
                auto.resolve(fresh, 800)


@pytest.mark.mpi(min_size=1)
def test_auto_choices_live_on_the_communicator() -> None:
    """Choices are kept in the communicator's state: a new communicator starts empty."""
    from distnet.allreduce.mpi import comm_state

    comm = _comm()
    fresh = comm.Dup()
    x = _data(10, comm.rank, seed=1)
    auto.auto_allreduce(fresh, x)
    assert list(comm_state(fresh).auto_choices) == [x.nbytes]
    fresh.Free()
    from distnet.allreduce import mpi

    assert mpi._STATE._last is None  # Free's delete callback: the state is not kept alive
    # may get the freed handle back: it must not inherit the old choices
    with _fresh(comm) as again:
        assert comm_state(again).auto_choices == {}
        assert comm_state(again).auto_table is None


# Layers as (start, end) slices of the flat buffer, in forward order; 8-byte items.
LAYERS = [(0, 600), (600, 610), (610, 5610), (5610, 5650), (5650, 5700)]
N = 5700


@pytest.mark.mpi(min_size=1)
@pytest.mark.parametrize("overlap", [True, False])
@pytest.mark.parametrize("bucket_bytes,first_bucket_bytes", [
    (25 << 20, 1 << 20),  # everything in one bucket
    (8 * 1000, 8 * 30),   # boundaries inside layers; layer 2 (5000 items) spans buckets
    (8 * 7, 8 * 1),       # many tiny buckets
    (8 * 2000, 8 * 70),   # first bucket covers the last layer plus part of the one before
])
@pytest.mark.parametrize("algorithm", ["native", "auto"])
def test_bucketer_matches_one_allreduce(overlap: bool, bucket_bytes: int,
                                        first_bucket_bytes: int, algorithm: str) -> None:
    comm = _comm()
    grads = np.zeros(N)
    with Bucketer(comm, grads, LAYERS, algorithm, bucket_bytes=bucket_bytes,
                  first_bucket_bytes=first_bucket_bytes, overlap=overlap) as bucketer:
        for step in range(2):  # reuse across steps
            x = _data(N, comm.rank, seed=100 + step)
            ref = _reference(comm, x)
            grads[:] = 0.0
            for lo, hi in reversed(LAYERS):  # backward: last layer first
                grads[lo:hi] = x[lo:hi]
                bucketer.hook(lo, hi)
            bucketer.finish()
            assert np.array_equal(grads, ref)


def _custom_algorithms() -> list[str]:
    from distnet.allreduce import ALGORITHMS

    return sorted(set(ALGORITHMS) - {"native", "auto"})


@pytest.mark.mpi(min_size=1)
@pytest.mark.parametrize("algorithm", _custom_algorithms())
def test_bucketer_with_every_algorithm(algorithm: str) -> None:
    """Several non-blocking schedule runs in flight at once, boundaries inside layers."""
    comm = _comm()
    grads = np.zeros(N)
    with Bucketer(comm, grads, LAYERS, algorithm, bucket_bytes=8 * 1000,
                  first_bucket_bytes=8 * 30, overlap=True) as bucketer:
        x = _data(N, comm.rank, seed=11)
        ref = _reference(comm, x)
        for lo, hi in reversed(LAYERS):
            grads[lo:hi] = x[lo:hi]
            bucketer.hook(lo, hi)
        bucketer.finish()
    assert np.array_equal(grads, ref)


@pytest.mark.mpi(min_size=1)
@pytest.mark.parametrize("algorithm", ["native", "ring"])
def test_bucketer_progress_thread(algorithm: str) -> None:
    """The polling thread and the hooks share the handles; results stay exact over steps."""
    comm = _comm()
    grads = np.zeros(N)
    with Bucketer(comm, grads, LAYERS, algorithm, bucket_bytes=8 * 500, first_bucket_bytes=8 * 30,
                  overlap=True, progress_thread=True, poll_s=2e-4) as bucketer:
        for step in range(3):
            x = _data(N, comm.rank, seed=200 + step)
            ref = _reference(comm, x)
            for lo, hi in reversed(LAYERS):
                grads[lo:hi] = x[lo:hi]
                bucketer.hook(lo, hi)
                np.dot(x[:2000], x[:2000])  # some compute between hooks
            bucketer.finish()
            assert np.array_equal(grads, ref)


@pytest.mark.mpi(min_size=1)
def test_bucketer_finish_reduces_unreported_and_uncovered() -> None:
    """A slice no hook reported, and a gap outside every layer, are still reduced."""
    comm = _comm()
    grads = _data(100, comm.rank, seed=7)
    ref = _reference(comm, grads)
    with Bucketer(comm, grads, [(0, 40), (50, 100)], "native", bucket_bytes=8 * 16,
                  first_bucket_bytes=8 * 8) as bucketer:
        bucketer.hook(50, 100)
        bucketer.finish()
    assert np.array_equal(grads, ref)


@pytest.mark.mpi(min_size=1)
def test_auto_on_a_fault_tolerant_comm_skips_shared_memory_waits(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Under ULFM a revoke must wake every rank: a table that names shm or hierarchical is
    stepped past on a hardened communicator (and on the plain one it is followed)."""
    from distnet.allreduce.registry import NOT_REVOCABLE
    from distnet.ft.ulfm import harden

    comm = _comm()
    assert {"shm", "hierarchical"} <= NOT_REVOCABLE
    table = {str(comm.size): [[64, "shm"], [1 << 30, "hierarchical"]]}
    with _tune_file(monkeypatch, json.dumps(table)):
        plain, hardened = comm.Dup(), harden(comm)
        try:
            assert auto.resolve(plain, 8) == "shm"
            for nbytes in (8, 800, 8 << 20):
                assert auto.resolve(hardened, nbytes) not in NOT_REVOCABLE
            _auto_is_exact(comm, hardened, 1001, seed=9)
        finally:
            plain.Free()
            hardened.Free()


def _slow_native(comm, buf, op=None) -> None:
    """native, 3 ms later: a candidate that must lose a race."""
    import time

    from distnet.allreduce.native import native_allreduce

    time.sleep(3e-3)
    native_allreduce(comm, buf) if op is None else native_allreduce(comm, buf, op=op)


def _race_file(p: int) -> str:
    return json.dumps({str(p): [[1 << 30, "dn_test_slow"]],
                       "race": {str(p): [[1 << 30, ["dn_test_slow", "native"]]]}})


@pytest.mark.mpi(min_size=1)
def test_race_keeps_the_faster_candidate_and_every_sum_is_exact(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The tune picked a slow algorithm and kept native as a near candidate: auto's first calls
    time both on every rank alike, every call's result is exact, then native runs."""
    from distnet.allreduce import race
    from distnet.allreduce.registry import ALGORITHMS

    comm = _comm()
    monkeypatch.setitem(ALGORITHMS, "dn_test_slow", _slow_native)
    monkeypatch.delenv(auto.RACE_ENV, raising=False)
    with _tune_file(monkeypatch, _race_file(comm.size)):
        with _fresh(comm) as fresh:
            n = 1001
            calls = 0
            while auto.deciding(fresh, n * 8):
                _auto_is_exact(comm, fresh, n, seed=calls)
                calls += 1
            assert calls == 2 * (race.PASSES * race.WARM + race.timed_calls(n * 8))
            assert comm.allgather(auto.chosen(fresh, n * 8)) == ["native"] * comm.size
            assert auto.resolve(fresh, n * 8) == "dn_test_slow"  # the bucketed path: the pick
            _auto_is_exact(comm, fresh, n, seed=99)  # and then the winner's


@pytest.mark.mpi(min_size=2)
def test_race_setting_is_rank_0s(monkeypatch: pytest.MonkeyPatch) -> None:
    """DISTNET_AUTO_RACE=0 on rank 0 turns the race off on every rank (a rank that raced alone
    would wait in the decision forever); a bad value on rank 0 stops every rank."""
    from distnet.allreduce.registry import ALGORITHMS

    comm = _comm()
    monkeypatch.setitem(ALGORITHMS, "dn_test_slow", _slow_native)
    with _tune_file(monkeypatch, _race_file(comm.size)):
        monkeypatch.setenv(auto.RACE_ENV, "0" if comm.rank == 0 else "1")
        with _fresh(comm) as fresh:
            x = _auto_is_exact(comm, fresh, 10, seed=3)
            assert not auto.deciding(fresh, x.nbytes)
            assert auto.chosen(fresh, x.nbytes) == "dn_test_slow"
        monkeypatch.setenv(auto.RACE_ENV, "on" if comm.rank == 0 else "1")
        with _fresh(comm) as fresh:
            with pytest.raises(UserError, match="DISTNET_AUTO_RACE must be 0 or 1"):
                auto.resolve(fresh, 80)


@pytest.mark.mpi(min_size=1)
def test_no_race_on_a_fault_tolerant_comm(monkeypatch: pytest.MonkeyPatch) -> None:
    """A race ends in an all-reduce of its timings that a revoke could not be relied on to
    wake cleanly mid-race: a hardened communicator runs the pick at once."""
    from distnet.allreduce.registry import ALGORITHMS
    from distnet.ft.ulfm import harden

    comm = _comm()
    monkeypatch.setitem(ALGORITHMS, "dn_test_slow", _slow_native)
    monkeypatch.delenv(auto.RACE_ENV, raising=False)
    with _tune_file(monkeypatch, _race_file(comm.size)):
        hardened = harden(comm)
        try:
            x = _auto_is_exact(comm, hardened, 10, seed=4)
            assert not auto.deciding(hardened, x.nbytes)
        finally:
            hardened.Free()

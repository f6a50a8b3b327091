"""`shm` specifics: zero-copy buffers in the shared window, the multi-node fallback, sync modes."""

from __future__ import annotations

import numpy as np
import pytest

from distnet.allreduce import ALGORITHMS
from distnet.allreduce.shm import ShmAllreduce, one_shared_node
from distnet.common.errors import UserError


def _comm():
    from mpi4py import MPI

    return MPI.COMM_WORLD


@pytest.mark.mpi(min_size=1)
@pytest.mark.parametrize("sync", ["spin", "barrier"])
def test_zero_copy_slices_reduce_in_place(sync: str) -> None:
    comm = _comm()
    p, r = comm.size, comm.rank
    shm = ShmAllreduce(sync=sync)
    try:
        grads = shm.buffer(comm, 100_003, np.float64)
        assert grads.shape == (100_003,) and not grads.any()
        grads[:] = r + 1
        for lo, hi in ((60_000, 100_003), (7, 60_000)):  # tail first, as the Bucketer does
            shm(comm, grads[lo:hi])
        total = p * (p + 1) / 2
        assert np.all(grads[7:] == total) and np.all(grads[:7] == r + 1)
        shm(comm, grads)  # the whole buffer, again in place
        assert np.all(grads[7:] == p * total) and np.all(grads[:7] == total)
    finally:
        shm.close()


@pytest.mark.mpi(min_size=1)
def test_window_cache_is_bounded_and_regrows() -> None:
    comm = _comm()
    shm = ShmAllreduce(max_comms=2)
    dups = [comm.Dup() for _ in range(3)]
    try:
        for size in (10, 100_000, 10):  # grows, then serves the small size from the big window
            for c in dups:
                buf = np.full(size, comm.rank, dtype=np.float32)
                shm(c, buf)
                assert np.all(buf == comm.size * (comm.size - 1) / 2)
        assert len(shm._states) <= 2
    finally:
        shm.close()
        for c in dups:
            c.Free()


@pytest.mark.mpi(min_size=4)
def test_emulated_nodes_fall_back_to_hierarchical(monkeypatch: pytest.MonkeyPatch) -> None:
    comm = _comm().Dup()  # a fresh communicator: its node map is computed under the env below
    monkeypatch.setenv("DISTNET_RANKS_PER_NODE", "2")
    shm = ShmAllreduce()
    try:
        buf = np.arange(1001, dtype=np.float64) + comm.rank
        ref = buf.copy()
        comm.Allreduce(__import__("mpi4py").MPI.IN_PLACE, ref)
        shm(comm, buf)
        assert np.array_equal(buf, ref)
        assert not shm._state(comm).single_node
    finally:
        shm.close()
        comm.Free()


def test_unknown_sync_is_refused() -> None:
    with pytest.raises(UserError, match="sync"):
        ShmAllreduce(sync="busy")


def test_a_node_map_over_unshared_memory_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """DISTNET_RANKS_PER_NODE claiming one node for ranks on two hosts: one clear error, not
    shm -> hierarchical -> shm on the same communicator until the stack runs out."""
    monkeypatch.setenv("DISTNET_RANKS_PER_NODE", "8")
    assert one_shared_node(True, (0, 0, 0)) is True
    assert one_shared_node(False, (0, 0, 1, 1)) is False
    assert one_shared_node(True, (0, 1)) is False
    with pytest.raises(UserError, match="DISTNET_RANKS_PER_NODE=8 puts 4 ranks"):
        one_shared_node(False, (0, 0, 0, 0))


@pytest.mark.mpi(min_size=1)
def test_registered() -> None:
    assert isinstance(ALGORITHMS["shm"], ShmAllreduce)


@pytest.mark.mpi(min_size=2)
def test_freed_communicators_windows_are_dropped_everywhere() -> None:
    # Handles of freed communicators may be reused on some ranks only; the cache must still
    # free the same windows on every rank (or the collective Free would hang).
    from mpi4py import MPI

    shm = ShmAllreduce(max_comms=4)
    p = MPI.COMM_WORLD.Get_size()
    for i in range(12):
        comm = MPI.COMM_WORLD.Dup()
        buf = np.full(1000 + i, float(comm.rank + 1))
        shm(comm, buf)
        assert np.all(buf == p * (p + 1) / 2)
        comm.Free()
    assert len(shm._states) <= 1  # only the last, freed one until the next miss
    shm.close()


@pytest.mark.mpi(min_size=2)
def test_chunked_and_small_paths_match_native(monkeypatch: pytest.MonkeyPatch) -> None:
    # Tiny chunks, so every message runs several chunks through the three rotating slots; the
    # lengths alternate between the one-sync small path and the chunked one, so a slot reused
    # too early (a peer still copying out of it) would show up as a wrong element.
    from mpi4py import MPI

    import distnet.allreduce.shm as shm_module

    monkeypatch.setattr(shm_module, "CHUNK_BYTES", 4096)
    monkeypatch.setattr(shm_module, "SMALL_BYTES", 256)
    comm = _comm()
    shm = ShmAllreduce()
    rng = np.random.default_rng(7 + comm.rank)
    try:
        for n in (5_003, 3, 64, 1_024, 1_025, 17, 20_011, 1, 4_099):
            for dtype in (np.float32, np.float64):
                buf = rng.integers(-1000, 1000, size=n).astype(dtype)
                ref = buf.copy()
                comm.Allreduce(MPI.IN_PLACE, ref)
                shm(comm, buf)
                assert np.array_equal(buf, ref), f"n={n} {dtype.__name__}"
    finally:
        shm.close()


@pytest.mark.mpi(min_size=4)
def test_hierarchical_runs_shm_inside_emulated_nodes(monkeypatch: pytest.MonkeyPatch) -> None:
    # Two-rank emulated nodes: shm inside each, the ring across leaders, a broadcast back; a
    # message of several shm chunks, odd lengths, two communicators at once (each has its own
    # node parts and windows: no rank frees a window its node peers still use).
    from mpi4py import MPI

    from distnet.allreduce.hierarchical import hierarchical_allreduce
    from distnet.allreduce.mpi import comm_state

    monkeypatch.setenv("DISTNET_RANKS_PER_NODE", "2")
    comms = [_comm().Dup(), _comm().Dup()]
    rng = np.random.default_rng(3 + comms[0].rank)
    try:
        for n in (1, 7, 5_003, 300_001, 13):
            for comm in comms:
                buf = rng.integers(-1000, 1000, size=n).astype(np.float64)
                ref = buf.copy()
                comm.Allreduce(MPI.IN_PLACE, ref)
                hierarchical_allreduce(comm, buf)
                assert np.array_equal(buf, ref), f"n={n}"
        for comm in comms:
            ((node, leaders, shm),) = comm_state(comm).node_parts.values()
            p, r = comm.size, comm.rank
            assert node.size == min(2, p - r // 2 * 2) and (leaders is None) == (node.rank != 0)
            if node.size > 1:
                assert shm._state(node).single_node  # the node part ran shm, no fallback
    finally:
        for comm in comms:
            comm.Free()


@pytest.mark.mpi(min_size=2)
def test_trainer_reduces_its_gradients_in_the_window(monkeypatch: pytest.MonkeyPatch) -> None:
    # distnet.train with shm, by name or as auto's pick, whole buffer or buckets (1.27 MB of
    # float64: a 1 MiB tail bucket and the rest), lets backward write into the shared window,
    # trains exactly as native does, and leaves private gradients behind when it ends.
    from dataclasses import replace

    from distnet.allreduce import auto
    from distnet.training.config import TrainConfig
    from distnet.training.trainer import Trainer

    comm = _comm()
    shm = ALGORITHMS["shm"]
    assert isinstance(shm, ShmAllreduce)
    cfg = TrainConfig(epochs=1, batch_size=8, lr=0.05, optimizer="sgd", momentum=0.9,
                      hidden="512,256", samples=203, dtype="float64", seed=3, quiet=True)
    reference = Trainer(comm, cfg)
    reference.fit()
    for kw in ({"allreduce": "shm"}, {"allreduce": "shm", "bucket_mb": 0.25},
               {"allreduce": "auto"}):
        if kw["allreduce"] == "auto":
            monkeypatch.setattr(auto, "resolve", lambda c, nbytes: "shm")
        trainer = Trainer(comm, replace(cfg, **kw))  # type: ignore[arg-type]
        assert shm.holds(trainer.model.grads) and trainer.opt.grads is trainer.model.grads, kw
        trainer.fit()
        assert not shm.holds(trainer.model.grads) and trainer.opt.grads is trainer.model.grads
        np.testing.assert_allclose(trainer.model.params, reference.model.params, rtol=1e-10,
                                   atol=1e-13, err_msg=str(kw))
        digests = comm.allgather(trainer.model.params.tobytes())
        assert len(set(digests)) == 1, kw


@pytest.mark.mpi(min_size=2)
def test_trainer_keeps_private_gradients_where_the_window_cannot_serve(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace

    from distnet.ft.resilient import FaultTolerantTrainer
    from distnet.training.config import TrainConfig
    from distnet.training.gradsync import shared_grad_buffer
    from distnet.training.trainer import Trainer

    comm = _comm()
    shm = ALGORITHMS["shm"]
    assert isinstance(shm, ShmAllreduce)
    cfg = TrainConfig(epochs=1, batch_size=8, lr=0.05, hidden="64,32", samples=203,
                      dtype="float64", seed=3, quiet=True, allreduce="shm", max_steps=2)
    for kw in ({"compress": "fp16"}, {"allreduce": "native"}, {"hidden": "8"}):
        # a compressor reduces its own encoding; native; 16 KiB or less takes the copy path
        trainer = Trainer(comm, replace(cfg, **kw))  # type: ignore[arg-type]
        assert not shm.holds(trainer.model.grads), kw
        trainer.fit()
    assert not shm.holds(FaultTolerantTrainer(comm, replace(cfg, track_samples=True)).model.grads)
    from mpi4py import MPI

    assert shared_grad_buffer(MPI.COMM_SELF, 10_000, np.float64, "shm") is None
    dup = comm.Dup()  # a fresh communicator: its node map is computed under the env below
    monkeypatch.setenv("DISTNET_RANKS_PER_NODE", "1")
    try:
        assert shared_grad_buffer(dup, 10_000, np.float64, "shm") is None  # no common memory
    finally:
        dup.Free()

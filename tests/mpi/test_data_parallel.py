"""The proofs that data parallelism is right, run inside every world size of the MPI suite."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import numpy as np
import pytest
from mpi4py import MPI

from distnet.data.shard import steps_per_epoch
from distnet.training.config import TrainConfig
from distnet.training.trainer import Trainer

COMM = MPI.COMM_WORLD


def small_cfg(**kw: object) -> TrainConfig:
    base = TrainConfig(epochs=2, batch_size=8, lr=0.05, optimizer="sgd", momentum=0.9,
                       hidden="12,8", samples=203, dtype="float64", seed=3, quiet=True)
    return replace(base, **kw)  # type: ignore[arg-type]


def digest(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def assert_same_on_all_ranks(a: np.ndarray) -> None:
    digests = COMM.allgather(digest(a))
    assert len(set(digests)) == 1, f"parameters differ across ranks: {digests}"


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adadelta"])
def test_n_ranks_batch_b_equals_one_rank_batch_nb(optimizer: str) -> None:
    # 203 samples → 163 train: the last global batch is short and uneven across ranks.
    cfg = small_cfg(optimizer=optimizer, lr=0.01 if optimizer == "adam" else 0.05)
    parallel = Trainer(COMM, cfg)
    parallel.fit()
    single = Trainer(MPI.COMM_SELF, replace(cfg, batch_size=cfg.batch_size * COMM.size))
    single.fit()
    assert parallel.progress.step == single.progress.step
    np.testing.assert_allclose(parallel.model.params, single.model.params, rtol=1e-9, atol=1e-12)


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_one_rank_stepping_inside_backward_equals_n_ranks_stepping_after(
        weight_decay: float) -> None:
    # Plain SGD: the lone rank takes its step inside backward, the N ranks after the reduction.
    cfg = small_cfg(momentum=0.0, weight_decay=weight_decay, lr_schedule="cosine")
    parallel = Trainer(COMM, cfg)
    parallel.fit()
    single = Trainer(MPI.COMM_SELF, replace(cfg, batch_size=cfg.batch_size * COMM.size))
    assert single._update_in_backward() is not None and parallel._update_in_backward() is None
    single.fit()
    assert parallel.progress.step == single.progress.step
    np.testing.assert_allclose(parallel.model.params, single.model.params, rtol=1e-9, atol=1e-12)


@pytest.mark.mpi(min_size=1)
def test_a_step_inside_backward_gives_the_parameters_of_the_separate_step() -> None:
    cfg = small_cfg(momentum=0.0, weight_decay=0.01, dropout=0.2)

    class Separate(Trainer):
        steps_in_backward = False

    fused, separate = Trainer(MPI.COMM_SELF, cfg), Separate(MPI.COMM_SELF, cfg)
    assert fused._update_in_backward() is not None and separate._update_in_backward() is None
    fused.fit()
    separate.fit()
    assert fused.progress.step == separate.progress.step > 0
    np.testing.assert_allclose(fused.model.params, separate.model.params, rtol=1e-12,
                               atol=1e-14)
    assert not fused.model.grads.any()  # its gradients were never written


@pytest.mark.mpi(min_size=1)
def test_parameters_identical_on_every_rank_after_every_step() -> None:
    trainer = Trainer(COMM, small_cfg(epochs=1, dtype="float32", dropout=0.2))
    n = len(trainer.data.y_train)
    from distnet.data.shard import epoch_permutation

    perm = epoch_permutation(n, trainer.cfg.seed, 0)
    while trainer.progress.pos < n:
        trainer.train_step(perm)
        assert_same_on_all_ranks(trainer.model.params)


@pytest.mark.mpi(min_size=1)
def test_every_sample_used_once_per_epoch() -> None:
    from distnet.data.shard import epoch_permutation, global_batch, rank_part

    n, seen = 163, []
    perm = epoch_permutation(n, 3, 0)
    pos = 0
    while pos < n:
        batch = global_batch(perm, pos, 8, COMM.size)
        seen.extend(rank_part(batch, COMM.rank, COMM.size).tolist())
        pos += len(batch)
    everyone = sorted(sum(COMM.allgather(seen), []))
    assert everyone == list(range(n))


@pytest.mark.mpi(min_size=1)
def test_checkpoint_resume_equals_uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> None:
    ckpt = COMM.bcast(str(tmp_path_factory.mktemp("ckpt")) if COMM.rank == 0 else None, root=0)
    cfg = small_cfg(optimizer="adam", lr=0.01, dropout=0.1, epochs=3)
    whole = Trainer(COMM, cfg)
    whole.fit()
    # Stop in the middle of the second epoch, where data position and RNG state both matter.
    per_epoch = steps_per_epoch(len(whole.data.y_train), cfg.batch_size, COMM.size)
    stop = per_epoch + per_epoch // 2
    first = Trainer(COMM, replace(cfg, checkpoint_dir=ckpt, checkpoint_every=stop, max_steps=stop))
    first.fit()
    COMM.Barrier()
    resumed = Trainer(COMM, replace(cfg, checkpoint_dir=ckpt, checkpoint_every=stop, resume=True))
    assert resumed.progress.step == stop
    assert 0 < resumed.progress.pos < len(whole.data.y_train)
    resumed.fit()
    assert resumed.progress.step == whole.progress.step
    assert digest(resumed.model.params) == digest(whole.model.params)


@pytest.mark.mpi(min_size=2)
def test_every_algorithm_trains_like_native() -> None:
    from distnet.allreduce import ALGORITHMS

    cfg = small_cfg(epochs=1)
    reference = Trainer(COMM, cfg)
    reference.fit()
    for name in sorted(ALGORITHMS):
        other = Trainer(COMM, replace(cfg, allreduce=name))
        other.fit()
        np.testing.assert_allclose(other.model.params, reference.model.params, rtol=1e-10,
                                   atol=1e-13, err_msg=name)
        assert_same_on_all_ranks(other.model.params)


@pytest.mark.mpi(min_size=2)
def test_bucketed_overlap_equals_one_buffer() -> None:
    cfg = small_cfg(epochs=1, hidden="40,30")
    plain = Trainer(COMM, cfg)
    plain.fit()
    for overlap in (True, False):
        # ~1 KiB buckets split layers and put several layers in flight at once.
        bucketed = Trainer(COMM, replace(cfg, bucket_mb=0.001, overlap=overlap))
        bucketed.fit()
        np.testing.assert_allclose(bucketed.model.params, plain.model.params, rtol=1e-10,
                                   atol=1e-13)


@pytest.mark.mpi(min_size=1)
def test_resume_honours_early_stopping_and_records_each_epoch_once(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    from distnet.training import checkpoint
    from distnet.training.metrics import read_metrics

    folder = COMM.bcast(str(tmp_path_factory.mktemp("es")) if COMM.rank == 0 else None, root=0)
    ckpt, metrics = f"{folder}/ckpt", f"{folder}/m.jsonl"
    per_epoch = steps_per_epoch(163, 8, COMM.size)
    # Stop exactly at the end of epoch 1, checkpointing there: resuming must not redo the end of
    # that epoch (a second "epoch 1" record).
    cfg = small_cfg(checkpoint_dir=ckpt, checkpoint_every=per_epoch, metrics=metrics)
    Trainer(COMM, replace(cfg, max_steps=per_epoch)).fit()
    COMM.Barrier()
    Trainer(COMM, replace(cfg, resume=True)).fit()
    if COMM.rank == 0:
        epochs = [r["epoch"] for r in read_metrics(metrics) if r.get("event") == "epoch"]
        assert epochs == [1, 2]
        # A checkpoint that says patience has run out: a resumed run must not train on.
        path = checkpoint.latest(ckpt)
        assert path is not None
        arrays, meta = checkpoint.load(path)
        meta["progress"]["bad_epochs"] = 5
        checkpoint.save(path, arrays, meta)
    COMM.Barrier()
    stopped = Trainer(COMM, replace(cfg, epochs=4, early_stopping=2, resume=True))
    step = stopped.progress.step
    stopped.fit()
    assert stopped.progress.step == step

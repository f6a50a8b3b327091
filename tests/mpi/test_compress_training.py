"""--compress through the trainer: identical on every rank, with every algorithm and bucketing,
and a checkpoint resume that carries the compressor's state bit for bit."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from mpi4py import MPI

from distnet.data.shard import steps_per_epoch
from distnet.training.trainer import Trainer
from tests.mpi.test_data_parallel import assert_same_on_all_ranks, digest, small_cfg

COMM = MPI.COMM_WORLD
COMPRESSED = ["fp16", "bf16", "powersgd"]


def cfg_for(name: str, **kw: object):  # type: ignore[no-untyped-def]
    # float32 (the narrow wire types are float32's halves); matrices large enough for rank 2.
    settings: dict[str, object] = {"epochs": 1, "dtype": "float32", "hidden": "24,16",
                                   "compress": name, "powersgd_rank": 2}
    return small_cfg(**{**settings, **kw})


@pytest.mark.mpi(min_size=1)
@pytest.mark.parametrize("name", COMPRESSED)
# (the executor and native's 16-bit path under every algorithm: tests/mpi/test_compress.py)
@pytest.mark.parametrize("algorithm", ["native", "ring"])
def test_identical_on_every_rank_and_close_to_uncompressed(name: str, algorithm: str) -> None:
    plain = Trainer(COMM, cfg_for("none", allreduce=algorithm))
    plain.fit()
    other = Trainer(COMM, cfg_for(name, allreduce=algorithm))
    summary = other.fit()
    assert_same_on_all_ranks(other.model.params)
    assert summary["wire_bytes"] < plain.sync.nbytes
    drift = np.abs(other.model.params - plain.model.params).max()
    assert drift > 0  # the compressor was really on the wire
    assert np.isfinite(other.model.params).all()
    if name != "powersgd":  # 16-bit rounding only: stays near the float32 run
        np.testing.assert_allclose(other.model.params, plain.model.params, atol=0.05)


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("name", COMPRESSED)
def test_bucketed_compression_identical_on_every_rank(name: str) -> None:
    one = Trainer(COMM, cfg_for(name, allreduce="ring"))
    one.fit()
    # ~1 KiB buckets cut the weight matrices: PowerSGD compresses their full rows.
    bucketed = Trainer(COMM, cfg_for(name, bucket_mb=0.001, allreduce="ring"))
    bucketed.fit()
    assert_same_on_all_ranks(bucketed.model.params)
    assert np.isfinite(bucketed.model.params).all()
    if name != "powersgd":  # casting is elementwise: buckets change nothing
        assert digest(bucketed.model.params) == digest(one.model.params)


@pytest.mark.mpi(min_size=1)
@pytest.mark.parametrize("name", ["fp16", "powersgd"])
def test_resume_with_compressor_state_equals_uninterrupted(
        name: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    ckpt = COMM.bcast(str(tmp_path_factory.mktemp("ckpt")) if COMM.rank == 0 else None, root=0)
    cfg = cfg_for(name, epochs=2, powersgd_start_step=2)
    whole = Trainer(COMM, cfg)
    whole.fit()
    per_epoch = steps_per_epoch(len(whole.data.y_train), cfg.batch_size, COMM.size)
    stop = per_epoch + per_epoch // 2  # mid-epoch, well after PowerSGD started
    first = Trainer(COMM, replace(cfg, checkpoint_dir=ckpt, checkpoint_every=stop, max_steps=stop))
    first.fit()
    COMM.Barrier()
    resumed = Trainer(COMM, replace(cfg, checkpoint_dir=ckpt, checkpoint_every=stop, resume=True))
    if name == "powersgd":
        state = resumed.sync.compressor.local_state()
        residual = sum(float(np.abs(v).sum()) for v in state.values())
        assert COMM.allreduce(residual) > 0  # error feedback state came back from the file
    resumed.fit()
    assert resumed.progress.step == whole.progress.step
    assert digest(resumed.model.params) == digest(whole.model.params)

"""The real CLI under mpirun: a happy run, and every kind of bad input ends every rank cleanly.

Bad input must give one clear error line (from rank 0 only), a non-zero exit, no traceback and no
hang; mpirun's own "exited with non-zero status" box is its business, not ours.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from tests.proc import PYTHON, mpi_python, mpirun_cmd, run

PROG = "python -m distnet.train: error:"
SMALL = ["--samples", "600", "--hidden", "16", "--epochs", "1", "--batch-size", "16"]


def train(n: int, *args: str, timeout_s: float = 120):  # noqa: ANN201
    return mpi_python(n, "-m", "distnet.train", *args, timeout_s=timeout_s)


def assert_clean_error(res, *needles: str) -> None:  # noqa: ANN001
    assert not res.timed_out, "run hung"
    assert res.returncode != 0
    ours = [line for line in res.stderr.splitlines() if line.startswith(PROG)]
    assert len(ours) == 1, f"expected one error line, got:\n{res.stderr}"
    for needle in needles:
        assert needle in ours[0], ours[0]
    assert "Traceback" not in res.stderr + res.stdout


def test_happy_run_writes_metrics_and_params(tmp_path: Path) -> None:
    metrics, params = tmp_path / "m.jsonl", tmp_path / "p.npz"
    res = train(2, "--samples", "4000", "--batch-size", "16", "--epochs", "2", "--metrics",
                str(metrics), "--save", str(params), "--profile")
    assert res.returncode == 0, res.stderr
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    epochs = [r for r in records if r.get("event") == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2]
    for key in ("train_loss", "val_loss", "val_acc", "samples_per_s", "compute_s", "comm_s"):
        assert all(np.isfinite(r[key]) for r in epochs), key
    assert records[-1]["event"] == "done" and records[-1]["world_size"] == 2
    assert any(r.get("event") == "step" for r in records)
    assert epochs[1]["val_acc"] > 0.6  # 10 classes: chance is 0.1
    assert params.exists()
    # Progress lines come from rank 0 only.
    assert res.stdout.count("epoch 1/2") == 1


def write_npz(path: Path, x: np.ndarray, y: np.ndarray) -> str:
    np.savez(path, x=x, y=y)
    return str(path)


def blobs(n: int = 300, d: int = 5, classes: int = 3,
          seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng.integers(0, classes, size=n)


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--batch-size", "0"], ["--batch-size"]),
        (["--batch-size", "-3"], ["--batch-size"]),
        (["--optimizer", "rmsprop"], ["rmsprop", "adam"]),
        (["--activation", "gelu"], ["gelu", "relu"]),
        (["--allreduce", "bogus"], ["bogus", "ring"]),
        (["--data", "/nonexistent/data.npz"], ["/nonexistent/data.npz"]),
        (["--epochs", "x"], ["--epochs"]),
        (["--hidden", "12,abc"], ["abc"]),
        (["--bucket-mb", "inf"], ["--bucket-mb"]),
        (["--save", "/tmp"], ["--save", "is a directory"]),
    ],
)
def test_bad_flags(args: list[str], needles: list[str]) -> None:
    assert_clean_error(train(2, *SMALL, *args), *needles)


def test_corrupt_data_file(tmp_path: Path) -> None:
    bad = tmp_path / "data.npz"
    bad.write_bytes(b"PK\x03\x04 this is not really a zip archive")
    assert_clean_error(train(2, *SMALL, "--data", str(bad)), "data.npz")


def test_corrupt_idx_file(tmp_path: Path) -> None:
    bad = tmp_path / "train-images-idx3-ubyte.gz"
    bad.write_bytes(gzip.compress(b"\x00\x00\x08\x03" + b"\x00" * 5))
    assert_clean_error(train(2, *SMALL, "--data", str(bad)), "idx3")


def test_nan_in_data(tmp_path: Path) -> None:
    x, y = blobs()
    x[7, 2] = np.nan
    assert_clean_error(train(2, *SMALL, "--data", write_npz(tmp_path / "nan.npz", x, y)), "NaN")


def test_inf_in_csv(tmp_path: Path) -> None:
    x, y = blobs(n=50)
    rows = [",".join(map(str, [*xi, yi])) for xi, yi in zip(x, y, strict=True)]
    rows[3] = rows[3].replace(rows[3].split(",")[0], "inf", 1)
    path = tmp_path / "d.csv"
    path.write_text("\n".join(rows) + "\n")
    assert_clean_error(train(2, *SMALL, "--data", str(path)), "d.csv")


def test_negative_labels(tmp_path: Path) -> None:
    x, y = blobs()
    y[5] = -1
    assert_clean_error(train(2, *SMALL, "--data", write_npz(tmp_path / "neg.npz", x, y)), "label")


def test_more_ranks_than_samples(tmp_path: Path) -> None:
    x, y = blobs(n=4)
    res = train(3, *SMALL, "--val-fraction", "0.5", "--data", write_npz(tmp_path / "t.npz", x, y))
    assert_clean_error(res, "more ranks")


def test_checkpoint_feature_mismatch_and_labels_out_of_range(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    x, y = blobs(d=5)
    ok = train(2, *SMALL, "--data", write_npz(tmp_path / "a.npz", x, y),
               "--checkpoint-dir", str(ckpt))
    assert ok.returncode == 0, ok.stderr
    before = sorted(p.name for p in ckpt.iterdir())
    x6, _ = blobs(d=6)
    res = train(2, *SMALL, "--data", write_npz(tmp_path / "b.npz", x6, y),
                "--checkpoint-dir", str(ckpt), "--resume")
    assert_clean_error(res, "feature count", "5", "6")
    y4 = y.copy()
    y4[0] = 4  # a 5th class the checkpointed model has no output for
    res = train(2, *SMALL, "--data", write_npz(tmp_path / "c.npz", x, y4),
                "--checkpoint-dir", str(ckpt), "--resume")
    assert_clean_error(res)
    assert sorted(p.name for p in ckpt.iterdir()) == before  # nothing overwritten


def test_resume_without_checkpoint(tmp_path: Path) -> None:
    res = train(2, *SMALL, "--checkpoint-dir", str(tmp_path / "empty"), "--resume")
    assert_clean_error(res, "no checkpoint")


def test_shared_memory_reductions_are_refused_under_ulfm() -> None:
    res = train(2, *SMALL, "--ft", "ulfm", "--allreduce", "shm")
    assert_clean_error(res, "--allreduce shm", "--ft ulfm")


def test_unwritable_output_fails_before_training() -> None:
    res = train(2, *SMALL, "--save", "/proc/nope/params.npz")
    assert_clean_error(res, "--save", "/proc/nope")
    assert "epoch 1/" not in res.stdout  # refused up front: no training result is thrown away


def test_error_on_one_rank_only_ends_every_rank(tmp_path: Path) -> None:
    # Rank 0 fails alone while the others wait in a collective: it must abort the job, not
    # return and block in MPI_Finalize while they block in Allreduce.
    script = tmp_path / "one_rank_fails.py"
    script.write_text(
        "import sys\n"
        "import numpy as np\n"
        "from distnet.common.errors import UserError\n"
        "from distnet.common.runner import run\n"
        "def main(comm):\n"
        "    from mpi4py import MPI\n"
        "    if comm.Get_rank() == 0:\n"
        "        raise UserError('disk full on rank 0 only')\n"
        "    comm.Allreduce(MPI.IN_PLACE, np.zeros(4))\n"
        "    return 0\n"
        "sys.exit(run(main, 'probe'))\n"
    )
    res = mpi_python(3, str(script), timeout_s=60)
    assert not res.timed_out, "the other ranks were left waiting"
    assert res.returncode != 0
    assert res.stderr.count("probe: error: disk full on rank 0 only") == 1
    assert "Traceback" not in res.stderr


def test_ranks_with_different_data_files(tmp_path: Path) -> None:
    # A stale copy of the data on one node: the ranks would run different numbers of steps.
    x, y = blobs(n=400)
    full = write_npz(tmp_path / "full.npz", x, y)
    stale = write_npz(tmp_path / "stale.npz", x[:300], y[:300])
    rank = [PYTHON, "-m", "distnet.train", *SMALL, "--data"]
    cmd = [*mpirun_cmd(1, *rank, full), ":", "-n", "1", *rank, stale]
    assert_clean_error(run(cmd, timeout_s=120), "different data")


def test_help_is_printed_once() -> None:
    res = train(3, "--help")
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("usage: python -m distnet.train") == 1


def test_search_writes_every_trial_to_metrics_and_refuses_checkpoints(tmp_path: Path) -> None:
    metrics = tmp_path / "s.jsonl"
    res = mpi_python(2, "-m", "distnet.search", *SMALL, "--trials", "2", "--metrics",
                     str(metrics), timeout_s=120)
    assert res.returncode == 0, res.stderr
    done = [r for r in map(json.loads, metrics.read_text().splitlines()) if r["event"] == "done"]
    assert len(done) == 2
    res = mpi_python(2, "-m", "distnet.search", *SMALL, "--trials", "2", "--checkpoint-dir",
                     str(tmp_path / "ck"), timeout_s=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.count("python -m distnet.search: error: --trials (random search)") == 1
    assert not (tmp_path / "ck").exists()


def test_error_on_every_rank_at_once_is_printed_once(tmp_path: Path) -> None:
    # Mid-run failures are not agreed (that would need a collective the others may never
    # reach); rank 0 reports and aborts, the others hold back their copy of the line.
    script = tmp_path / "all_fail.py"
    script.write_text(
        "import sys\n"
        "from distnet.common.errors import UserError\n"
        "from distnet.common.runner import run\n"
        "def main(comm):\n"
        "    raise UserError('the same problem everywhere')\n"
        "sys.exit(run(main, 'probe'))\n"
    )
    res = mpi_python(3, str(script), timeout_s=60)
    assert not res.timed_out and res.returncode != 0
    assert res.stderr.count("probe: error: the same problem everywhere") == 1, res.stderr

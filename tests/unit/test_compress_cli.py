"""--compress at the CLI: bad values are one clean error line; a profiled run records the wire."""

from __future__ import annotations

from pathlib import Path

import pytest

from distnet.training.metrics import read_metrics
from tests.unit.test_train_cli import SMALL, assert_clean_error, train


@pytest.mark.parametrize("args, needles", [
    (["--compress", "zip"], ["--compress", "powersgd"]),
    (["--compress", "powersgd", "--powersgd-rank", "0"], ["--powersgd-rank"]),
    (["--powersgd-rank", "100000"], ["--powersgd-rank"]),
    (["--powersgd-start-step", "-1"], ["--powersgd-start-step"]),
])
def test_bad_compress_flags(args: list[str], needles: list[str]) -> None:
    assert_clean_error(train(2, *SMALL, *args), *needles)


@pytest.mark.parametrize("name", ["fp16", "powersgd"])
def test_profile_records_wire_bytes(name: str, tmp_path: Path) -> None:
    metrics = tmp_path / "m.jsonl"
    res = train(2, *SMALL, "--compress", name, "--profile", "--metrics", str(metrics),
                "--hidden", "64,32")
    assert res.returncode == 0, res.stderr
    records = read_metrics(str(metrics))
    steps = [r for r in records if r["event"] == "step"]
    done = [r for r in records if r["event"] == "done"][-1]
    assert steps and all(r["compress"] == name for r in steps)
    assert all(r["wire_bytes"] == sum(r["wire_stages"]) < r["bytes"] for r in steps)
    assert all(r["compress_s"] >= 0 for r in steps)
    assert done["compress"] == name and done["wire_bytes"] < done["grad_bytes"]

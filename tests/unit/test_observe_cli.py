"""--trace, straggler blame and stall reports through the real distnet.train CLI at 4 ranks.

No timing asserts: the straggler sleeps 30 ms per step (the blame bar is max(1 ms, 10 % of a
step)); the stalled rank hangs 5 s against a 1 s stall warning and a 60 s deadline.
"""

from __future__ import annotations

import json
from pathlib import Path

from distnet.training.metrics import read_metrics
from tests.proc import mpi_python
from tests.unit.test_observe import nested_ok

SMALL = ["--samples", "2000", "--hidden", "64,64", "--batch-size", "16", "--epochs", "1"]


def train(n: int, *args: str, timeout_s: float = 240):  # noqa: ANN201
    return mpi_python(n, "-m", "distnet.train", *SMALL, *args, timeout_s=timeout_s)


def test_trace_of_a_bucketed_run_has_every_rank_and_nests(tmp_path: Path) -> None:
    trace, png = tmp_path / "t.json", tmp_path / "t.png"
    # 48-512-512-10 is 1.17 MB of gradients: past the 1 MiB first bucket, so two buckets.
    res = train(4, "--hidden", "512,512", "--bucket-mb", "0.1", "--max-steps", "8",
                "--trace", str(trace),
                "--trace-detail", "--trace-plot", str(png), "--allreduce", "ring")
    assert not res.timed_out and res.returncode == 0, res.stderr[-3000:]
    data = json.loads(trace.read_text())
    evs = data["traceEvents"]
    assert {e["pid"] for e in evs} == {0, 1, 2, 3}
    assert nested_ok(evs)
    cats = {e.get("cat") for e in evs}
    assert {"step", "forward", "backward", "allreduce", "schedule", "optim"} <= cats
    assert len({e["tid"] for e in evs if e.get("cat") == "allreduce"}) > 1  # several buckets
    offsets = data["otherData"]["clock_offsets"]
    assert set(offsets) == {"0", "1", "2", "3"} and offsets["0"]["error_us"] == 0
    assert png.stat().st_size > 10_000
    assert res.stdout.count("straggler: ") == 1


def test_injected_straggler_is_blamed_and_recorded(tmp_path: Path) -> None:
    metrics = tmp_path / "m.jsonl"
    res = train(4, "--max-steps", "25", "--metrics", str(metrics),
                "--inject", "slow:rank=2:step=0:seconds=0.03:steps=1000")
    assert not res.timed_out and res.returncode == 0, res.stderr[-3000:]
    assert "straggler: world rank 2 arrived last in" in res.stdout, res.stdout
    rec = next(r for r in read_metrics(str(metrics)) if r["event"] == "straggler")
    assert rec["straggler"] == 2 and rec["last_count"]["2"] >= rec["steps"] // 2


def test_fault_free_run_blames_nobody() -> None:
    res = train(4, "--max-steps", "40")
    assert not res.timed_out and res.returncode == 0, res.stderr[-3000:]
    assert "straggler: none" in res.stdout, res.stdout


def test_stalled_rank_is_named_without_killing_anything() -> None:
    res = train(3, "--max-steps", "8", "--stall-warn-s", "1", "--deadline-s", "60",
                "--inject", "hang:rank=1:step=4:seconds=5")
    assert not res.timed_out and res.returncode == 0, res.stderr[-3000:]
    lines = [ln for ln in res.stderr.splitlines() if "distnet: stall:" in ln]
    assert lines, res.stderr
    assert all("world rank(s) 1 to arrive" in ln for ln in lines), lines
    assert "step 4 bucket 0" in lines[0] and "world rank 1 last at step 3" in lines[0]

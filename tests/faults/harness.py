"""Launch the real CLI under mpirun with faults, and the checks every scenario shares.

Every run is `mpirun -n N python -m distnet.train ...` in its own process group with a hard
timeout (tests/proc.py), on the small embedded dataset, and is judged only by what it leaves
behind: the metrics file (JSONL), saved parameters, checkpoints and its stderr.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from distnet.training.metrics import read_metrics
from tests.proc import PYTHON, Result, mpi_python, run

N_SAMPLES = 4000
N_TRAIN = 3200  # 80 % of N_SAMPLES
EPOCHS = 2
WORLD = 4
BASE_ARGS = ["--samples", str(N_SAMPLES), "--epochs", str(EPOCHS), "--hidden", "32",
             "--batch-size", "32", "--dtype", "float64", "--lr", "0.01", "--seed", "3",
             "--track-samples"]
TIMEOUT_S = 180.0  # a hang guard only; runs take seconds on an idle machine
LOSS_RTOL = 0.02


@dataclass
class Run:
    result: Result
    metrics: list[dict[str, Any]] = field(default_factory=list)
    workdir: Path = Path(".")

    @property
    def output(self) -> str:
        return self.result.stdout + self.result.stderr

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.metrics if m.get("event") == kind]

    def one(self, kind: str) -> dict[str, Any]:
        found = self.events(kind)
        assert len(found) == 1, f"expected one {kind!r} record, got {len(found)}\n{self.tail()}"
        return found[0]

    def tail(self) -> str:
        return self.output[-3000:]


def train(tmp: Path, *args: str, n: int = WORLD, ft: str = "ulfm", name: str = "run",
          timeout_s: float = TIMEOUT_S, base: list[str] | None = None,
          ulfm_mpirun: bool | None = None, env: dict[str, str] | None = None) -> Run:
    """One training job; ft='ulfm' also starts mpirun with ULFM over TCP."""
    metrics = tmp / f"{name}.jsonl"
    argv = ["-m", "distnet.train", *(BASE_ARGS if base is None else base),
            "--metrics", str(metrics), "--ft", ft, *args]
    with_ft = ft == "ulfm" if ulfm_mpirun is None else ulfm_mpirun
    res = mpi_python(n, *argv, timeout_s=timeout_s, ft=with_ft, env=env)
    assert not res.timed_out, f"mpirun -n {n} timed out: {argv}\n{res.stderr[-3000:]}"
    recs = read_metrics(str(metrics)) if metrics.exists() else []
    return Run(res, recs, tmp)


def supervise(tmp: Path, *args: str, n: int = WORLD, retries: int = 2,
              extra: list[str] | None = None, timeout_s: float = 400.0) -> Run:
    metrics = tmp / "sup.jsonl"
    cmd = [PYTHON, "-m", "distnet.ft.supervise", "-n", str(n), "--retries", str(retries),
           "--timeout-s", "170", *(extra or []), "--", *BASE_ARGS, "--metrics", str(metrics),
           "--checkpoint-dir", str(tmp / "ckpt"), *args]
    res = run(cmd, timeout_s)
    assert not res.timed_out, f"supervisor timed out\n{res.stderr[-3000:]}"
    return Run(res, read_metrics(str(metrics)) if metrics.exists() else [], tmp)


# ---- the checks -----------------------------------------------------------------------------
def assert_finished(run: Run, survivors: int) -> dict[str, Any]:
    """Training reached its end on `survivors` ranks holding bitwise identical parameters."""
    assert run.events("done"), f"no 'done' record\n{run.tail()}"
    assert run.events("ft_done"), run.tail()
    ft = run.events("ft_done")[-1]  # a grown-back job has one per run
    assert ft["world_size"] == survivors, run.tail()
    assert len(ft["param_digests"]) == survivors
    assert ft["params_identical"], ft["param_digests"]
    return ft


def assert_loss_close(run: Run, ref: Run, rtol: float = LOSS_RTOL) -> None:
    got, want = run.events("done")[-1]["val_loss"], ref.one("done")["val_loss"]
    assert abs(got - want) <= rtol * want, f"val_loss {got} vs fault-free {want}"
    got_t = [e["train_loss"] for e in run.events("epoch")][-1]
    want_t = [e["train_loss"] for e in ref.events("epoch")][-1]
    assert abs(got_t - want_t) <= rtol * want_t, f"train_loss {got_t} vs fault-free {want_t}"


def assert_samples_exactly_once(run: Run, epochs: int = EPOCHS, n_train: int = N_TRAIN,
                                steps: dict[int, set[int]] | None = None) -> None:
    """Each epoch's committed steps used every training sample exactly once."""
    by_epoch: dict[int, list[int]] = {e: [] for e in range(epochs)}
    for rec in run.events("samples"):
        if steps is None or rec["step"] in steps.get(rec.get("attempt", 0), set()):
            by_epoch[rec["epoch"]].extend(rec["ids"])
    for epoch, ids in by_epoch.items():
        got = np.sort(np.asarray(ids))
        assert len(got) == n_train, f"epoch {epoch}: {len(got)} sample uses, want {n_train}"
        assert np.array_equal(got, np.arange(n_train)), f"epoch {epoch}: lost or duplicated"


def assert_recovery(run: Run, failed: list[int], min_events: int = 1,
                    in_step: bool = True) -> list[dict[str, Any]]:
    """Recovery events name the failed ranks and report recovery time and redone steps (none
    when every failure met the survivors in a phase outside a step, which is repeated)."""
    events = run.events("recovery")
    assert len(events) >= min_events, run.tail()
    assert sorted({r for e in events for r in e["failed_ranks"]}) == sorted(failed), events
    for e in events:
        assert e["recovery_s"] > 0 and e["redone_steps"] in (0, 1), e
    redone = sum(e["redone_steps"] for e in events)
    assert redone >= 1 if in_step else redone == 0, events
    assert "recovery: lost world rank" in run.output
    return events


def write_plan(tmp: Path, plan: Any) -> Path:
    path = tmp / "plan.json"
    path.write_text(json.dumps(plan))
    return path

"""Rank failures under `--ft ulfm`: survivors shrink, redo the step, and finish the run.

Each scenario checks the four promises: training finishes on the survivors with bitwise
identical parameters, the final loss is within 2 % of the fault-free run, every sample of every
epoch is used exactly once, and the recovery is reported with its time and redone steps.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from distnet.allreduce.auto import TUNE_ENV
from distnet.ft.faultplan import FATAL, chaos_plan
from distnet.ft.resilient import ATTEMPT_ENV
from distnet.training import checkpoint
from tests.faults.harness import (
    Run,
    assert_finished,
    assert_loss_close,
    assert_recovery,
    assert_samples_exactly_once,
    train,
    write_plan,
)
from tests.faults.test_none_restart import committed_steps

# id: (world size, extra CLI arguments, world ranks that must be reported failed)
CRASHES: dict[str, tuple[int, list[str], list[int]]] = {
    "crash": (4, ["--inject", "crash:rank=2:step=5"], [2]),
    "crash_rank0": (4, ["--inject", "crash:rank=0:step=30"], [0]),
    "crash_in_native_allreduce": (4, ["--inject", "crash:rank=3:step=7:at=allreduce"], [3]),
    "crash_in_ring_allreduce": (
        4, ["--allreduce", "ring", "--inject", "crash:rank=1:step=9:at=allreduce"], [1]),
    "crash_in_bucketed_allreduce": (
        4, ["--bucket-mb", "0.004", "--inject", "crash:rank=2:step=6:at=allreduce"], [2]),
    "crash_recursive_doubling": (
        4, ["--allreduce", "recursive_doubling", "--inject", "crash:rank=1:step=12"], [1]),
    "sigkill_from_outside": (4, ["--inject", "kill:rank=3:step=9"], [3]),
    "crash_during_recovery": (
        4, ["--inject", "crash:rank=2:step=6", "--inject", "crash:rank=3:step=6:at=recovery"],
        [2, 3]),
    "two_crashes_two_epochs": (
        5, ["--inject", "crash:rank=1:step=5", "--inject", "crash:rank=3:step=33"], [1, 3]),
    "crash_in_short_last_batch": (3, ["--inject", "crash:rank=1:step=33"], [1]),
    "two_ranks_to_one": (2, ["--inject", "crash:rank=0:step=4"], [0]),
    "hang": (4, ["--inject", "hang:rank=1:step=8"], [1]),
    # arrived, then froze after the ring's first exchange: every note came, the probe finds it
    "frozen_in_ring_allreduce": (
        4, ["--allreduce", "ring", "--deadline-s", "3", "--inject",
            "hang:rank=1:step=8:at=allreduce"], [1]),
    "straggler_past_deadline": (
        4, ["--deadline-s", "3", "--inject", "slow:rank=2:step=8:seconds=60"], [2]),
}


@pytest.mark.parametrize("name", sorted(CRASHES))
def test_rank_failure_recovered(name: str, tmp_path: Path,
                                references: Callable[[int], Run]) -> None:
    n, args, failed = CRASHES[name]
    run = train(tmp_path, *args, n=n)
    assert_finished(run, survivors=n - len(failed))
    assert_loss_close(run, references(n))
    assert_samples_exactly_once(run)
    assert_recovery(run, failed)


def test_crash_of_rank0_hands_over_log_and_metrics(tmp_path: Path, reference: Run) -> None:
    run = train(tmp_path, "--inject", "crash:rank=0:step=30")
    rec = run.one("recovery")
    assert rec["failed_ranks"] == [0] and rec["world_size"] == 3 and rec["step"] == 30
    # the metrics written after the crash come from the new rank 0, appended to the same file
    assert [e["epoch"] for e in run.events("epoch")] == [1, 2]
    assert run.one("ft_done")["members"] == [1, 2, 3]


def test_auto_recovers_although_its_table_names_shared_memory(tmp_path: Path,
                                                              reference: Run) -> None:
    """A tune table that picks shm everywhere: under --ft ulfm auto must step past it. The
    straggler's peers wait in the reduction until the deadline fences it; a revoke cannot wake
    them out of a shared-memory wait, only out of MPI's."""
    table = tmp_path / "tune.json"
    table.write_text(json.dumps({str(p): [[1 << 40, "shm"]] for p in (3, 4)}))
    run = train(tmp_path, "--allreduce", "auto", "--deadline-s", "3",
                "--inject", "slow:rank=2:step=8:seconds=60", env={TUNE_ENV: str(table)})
    assert_finished(run, survivors=3)
    assert_loss_close(run, reference)
    assert_samples_exactly_once(run)
    assert_recovery(run, [2])


def test_rank_frozen_in_an_evaluation_aborts_at_the_phase_limit(tmp_path: Path) -> None:
    """Outside a step nobody posts arrival notes, so a rank frozen in an evaluation cannot be
    named and fenced: past the phase's limit (30 s here) the job ends with one line and a
    failure status instead of waiting for ever."""
    run = train(tmp_path, "--inject", "hang:rank=1:step=0:at=evaluation")
    assert run.result.returncode != 0, run.tail()
    said = " ".join(run.output.split())
    assert "freezes inside the evaluation" in said, run.tail()
    assert "the evaluation at step" in said and "did not finish within 30 s" in said, run.tail()
    assert not run.events("done") and not run.events("ft_done"), run.tail()


def test_crash_while_writing_checkpoint(tmp_path: Path, reference: Run) -> None:
    ckpt = tmp_path / "ckpt"
    run = train(tmp_path, "--checkpoint-dir", str(ckpt), "--checkpoint-every", "5",
                "--inject", "crash:rank=0:step=10:at=checkpoint")
    assert_finished(run, survivors=3)
    assert_loss_close(run, reference)
    assert_samples_exactly_once(run)
    assert_recovery(run, [0], in_step=False)  # the peers wait for the write: phase repeated
    latest = checkpoint.latest(str(ckpt))
    assert latest is not None
    _, meta = checkpoint.load(latest)
    assert meta["progress"]["step"] == run.one("done")["steps"]


@pytest.mark.parametrize("seed", [1, 2])
def test_chaos(seed: int, tmp_path: Path, reference: Run) -> None:
    """Seeded random faults of every kind; the plan itself says who must die."""
    spec = {"seed": seed, "count": 5, "max_step": 45, "min_step": 3}
    plan = chaos_plan(seed, 4, 5, 45, min_step=3)
    fatal = sorted({f.rank for f in plan if f.kind in FATAL})
    run = train(tmp_path, "--fault-plan", str(write_plan(tmp_path, {"chaos": spec})))
    assert_finished(run, survivors=4 - len(fatal))
    assert_loss_close(run, reference)
    assert_samples_exactly_once(run)
    if fatal:
        assert_recovery(run, fatal)


def test_rank_stuck_in_user_code_aborts_at_the_shrink_limit(tmp_path: Path, reference: Run) -> None:
    """A live rank whose main thread is stuck inside the reduction while its watchdog thread
    still answers the probe looks like a lost message: nobody may kill it, and the shrink waits
    for it. The honest answer is abort-and-restart: the shrink's time limit (30 s) aborts the
    job with one line, and the restart from the latest checkpoint (what the supervisor passes:
    --resume, the next attempt) finishes it as one run."""
    ckpt = tmp_path / "ckpt"
    args = ["--deadline-s", "3", "--checkpoint-dir", str(ckpt), "--checkpoint-every", "4"]
    first = train(tmp_path, *args, "--inject", "hang:rank=1:step=9:at=allreduce:seconds=150",
                  name="job")
    assert first.result.returncode != 0, first.tail()
    said = " ".join(first.output.split())
    assert "all answered the probe" in said and "did not finish within 30 s" in said, first.tail()
    assert not first.events("done") and not first.events("ft_done"), first.tail()
    again = train(tmp_path, *args, "--resume", name="job", env={ATTEMPT_ENV: "1"})
    assert_finished(again, 4)
    assert_loss_close(again, reference)
    assert_samples_exactly_once(again, steps=committed_steps(again))

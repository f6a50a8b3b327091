"""`--ft none` ends a faulty job promptly with a clear error; `--ft restart` continues it.

The restart supervisor reruns the job from its latest checkpoint (optionally on fewer ranks);
a later run may also grow back to more ranks. Steps done after the checkpoint by a run that then
died are redone by the next one, so the sample proof keeps, for each attempt, only the steps
before the next attempt's first step.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.faults.harness import (
    Run,
    assert_finished,
    assert_loss_close,
    assert_samples_exactly_once,
    supervise,
    train,
)

# id: (extra CLI arguments, text the error output must contain)
FATAL_WITHOUT_FT: dict[str, tuple[list[str], str]] = {
    "crash": (["--inject", "crash:rank=2:step=5"], "injected fault crash:rank=2:step=5"),
    "hang": (["--inject", "hang:rank=1:step=8"], "world rank(s) [1] missed the"),
    "nan": (["--inject", "nan:rank=3:step=4"], "stopping before the model is poisoned"),
    "dropped_message": (["--allreduce", "ring", "--deadline-s", "4", "--inject",
                         "drop:rank=1:step=5"], "missed the 4.0 s deadline"),
}


@pytest.mark.parametrize("name", sorted(FATAL_WITHOUT_FT))
def test_ft_none_stops_with_clear_error(name: str, tmp_path: Path) -> None:
    args, message = FATAL_WITHOUT_FT[name]
    run = train(tmp_path, *args, ft="none", timeout_s=120)  # a hang would time out: no hang
    assert run.result.returncode != 0
    assert message in run.output, run.tail()
    assert not run.events("done")


def committed_steps(run: Run) -> dict[int, set[int]]:
    """attempt -> the steps of that attempt that the next attempt did not redo."""
    steps: dict[int, set[int]] = {}
    for rec in run.events("samples"):
        steps.setdefault(rec["attempt"], set()).add(rec["step"])
    attempts = sorted(steps)
    for a, b in zip(attempts, attempts[1:], strict=False):
        first = min(steps[b])
        steps[a] = {s for s in steps[a] if s < first}
    return steps


def test_restart_from_checkpoint(tmp_path: Path, reference: Run) -> None:
    run = supervise(tmp_path, "--checkpoint-every", "5", "--inject", "crash:rank=2:step=12")
    assert run.result.returncode == 0, run.tail()
    restart = run.one("restart")
    assert restart["from_checkpoint"].endswith("ckpt-000000010.npz")
    assert restart["redone_steps"] == 2  # steps 10 and 11 were done after the checkpoint
    ft = assert_finished(run, survivors=4)
    assert ft["attempt"] == 1
    assert_loss_close(run, reference)
    assert_samples_exactly_once(run, steps=committed_steps(run))


def test_restart_on_fewer_ranks(tmp_path: Path, reference: Run) -> None:
    run = supervise(tmp_path, "--checkpoint-every", "5", "--inject", "kill:rank=3:step=17",
                    extra=["--shrink"])
    assert run.result.returncode == 0, run.tail()
    assert run.one("restart")["world_size"] == 3
    assert_finished(run, survivors=3)
    assert_loss_close(run, reference)
    assert_samples_exactly_once(run, steps=committed_steps(run))


def test_restart_after_crash_while_writing_checkpoint(tmp_path: Path, reference: Run) -> None:
    """The write of checkpoint 10 dies before its rename: the restart uses checkpoint 5."""
    run = supervise(tmp_path, "--checkpoint-every", "5",
                    "--inject", "crash:rank=0:step=10:at=checkpoint")
    assert run.result.returncode == 0, run.tail()
    assert run.one("restart")["from_checkpoint"].endswith("ckpt-000000005.npz")
    assert_finished(run, survivors=4)
    assert_loss_close(run, reference)
    assert_samples_exactly_once(run, steps=committed_steps(run))


def test_grow_back_from_checkpoint(tmp_path: Path, references: Callable[[int], Run]) -> None:
    """2 ranks stop after 20 steps; 4 ranks continue the same epoch from the checkpoint.

    The job keeps the global batch of its first run (2 x 32), so it matches the 2-rank run.
    """
    ckpt = str(tmp_path / "ckpt")
    first = train(tmp_path, "--checkpoint-dir", ckpt, "--max-steps", "20",
                  "--checkpoint-every", "10", n=2, ft="none", name="grow")
    assert first.result.returncode == 0, first.tail()
    run = train(tmp_path, "--checkpoint-dir", ckpt, "--resume", n=4, name="grow")
    assert run.result.returncode == 0, run.tail()
    assert "resumed from" in run.output
    assert_finished(run, survivors=4)
    assert {r["world_size"] for r in run.events("samples")} == {2, 4}
    assert_samples_exactly_once(run)
    assert_loss_close(run, references(2))


def test_supervisor_grows_back(tmp_path: Path, references: Callable[[int], Run]) -> None:
    """A 2-rank job dies; the supervisor continues it on 4 ranks with the job's global batch."""
    run = supervise(tmp_path, "--checkpoint-every", "10", "--inject", "crash:rank=1:step=30",
                    n=2, extra=["--grow-to", "4"])
    assert run.result.returncode == 0, run.tail()
    restart = run.one("restart")
    assert restart["old_world_size"] == 2 and restart["world_size"] == 4
    assert_finished(run, survivors=4)
    assert_loss_close(run, references(2))
    assert_samples_exactly_once(run, steps=committed_steps(run))

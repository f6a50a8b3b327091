"""Corruption, slowness and lost messages: no rank dies, the model is never poisoned.

A corrupted or NaN step is detected by the gradient checksum on every rank, agreed on, and
redone; since the redo computes the same gradient again, the final parameters are bitwise
those of the fault-free run. Delays and stragglers within the deadline change nothing at all.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.harness import (
    Run,
    assert_finished,
    assert_loss_close,
    assert_samples_exactly_once,
    train,
)

# id: (extra CLI arguments, integrity events expected)
SAME_AS_REFERENCE: dict[str, tuple[list[str], int]] = {
    "nan_gradient": (["--inject", "nan:rank=3:step=4"], 1),
    "nan_on_two_ranks": (["--inject", "nan:rank=0:step=10", "--inject", "nan:rank=2:step=10"], 1),
    "bitflip_in_flight": (["--inject", "bitflip:rank=1:step=6"], 1),
    "bitflip_then_nan": (["--inject", "bitflip:rank=2:step=12", "--inject",
                          "nan:rank=1:step=30"], 2),
    "delayed_messages": (["--inject", "delay:rank=2:step=3:seconds=0.05:steps=4"], 0),
    "straggler_within_deadline": (["--inject", "slow:rank=1:step=3:seconds=0.05:steps=5"], 0),
}


@pytest.mark.parametrize("name", sorted(SAME_AS_REFERENCE))
def test_transient_fault_leaves_no_trace(name: str, tmp_path: Path, reference: Run) -> None:
    args, integrity_events = SAME_AS_REFERENCE[name]
    run = train(tmp_path, *args)
    ft = assert_finished(run, survivors=4)
    assert run.result.returncode == 0, run.tail()
    assert ft["param_digests"][0] == reference.one("ft_done")["param_digests"][0]
    events = run.events("integrity")
    assert len(events) == integrity_events and all(e["action"] == "redo" for e in events)
    assert ft["redone_steps"] == integrity_events and ft["recoveries"] == 0
    assert_samples_exactly_once(run)


def test_bitflip_inside_ring_allreduce(tmp_path: Path, reference: Run) -> None:
    """The flip hits one chunk of a ring's Sendrecv and spreads; the checksum still sees it."""
    run = train(tmp_path, "--allreduce", "ring", "--inject", "bitflip:rank=2:step=7")
    assert_finished(run, survivors=4)
    assert_loss_close(run, reference)
    assert [e["step"] for e in run.events("integrity")] == [7]
    assert_samples_exactly_once(run)


def test_dropped_message_revokes_and_redoes(tmp_path: Path, reference: Run) -> None:
    """A lost ring message blocks the reduction; the watchdog revokes, nobody is dropped."""
    run = train(tmp_path, "--allreduce", "ring", "--deadline-s", "4",
                "--inject", "drop:rank=1:step=5")
    assert_finished(run, survivors=4)
    assert_loss_close(run, reference)
    assert_samples_exactly_once(run)
    rec = run.one("recovery")
    assert rec["failed_ranks"] == [] and rec["world_size"] == 4 and rec["redone_steps"] == 1
    assert rec["cause"] == "reduction deadline" and rec["waited_s"] == 4

"""`--compress` under `--ft ulfm`: a rank dies mid-run, the survivors keep the compressor state
(PowerSGD's Q and their residuals) through the shrink and finish like a fault-free compressed run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.harness import (
    WORLD,
    assert_finished,
    assert_loss_close,
    assert_recovery,
    assert_samples_exactly_once,
    train,
)

# id: (compression arguments, fault, world ranks that must be reported failed)
SCENARIOS: dict[str, tuple[list[str], str, list[int]]] = {
    "powersgd_bucketed_ring": (
        ["--compress", "powersgd", "--powersgd-start-step", "3", "--bucket-mb", "0.004",
         "--allreduce", "ring"], "crash:rank=2:step=6:at=allreduce", [2]),
    "fp16_native": (["--compress", "fp16"], "crash:rank=1:step=9", [1]),
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_compressed_run_survives_a_rank_failure(name: str, tmp_path: Path) -> None:
    args, fault, failed = SCENARIOS[name]
    reference = train(tmp_path, *args, name="reference")
    assert reference.result.returncode == 0, reference.tail()
    run = train(tmp_path, *args, "--inject", fault)
    assert_finished(run, survivors=WORLD - len(failed))
    # Fewer ranks after the shrink see the same samples; the lost residual is bounded.
    assert_loss_close(run, reference, rtol=0.05)
    assert_samples_exactly_once(run)
    assert_recovery(run, failed)

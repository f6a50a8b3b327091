"""bench train: the FLOP count of a step's matmuls, the BLAS-limit table, the world-1 worker."""

from __future__ import annotations

import json

import pytest

from distnet.bench import training
from tests.proc import mpi_python


def test_matmul_flops_counts_forward_and_both_backward_products() -> None:
    b = 128
    layers = [2 * b * 784 * 1024, 2 * b * 1024 * 1024, 2 * b * 1024 * 10]
    # forward + dW for every layer, dx for all but the first
    assert training._matmul_flops(b) == sum(layers) * 3 - layers[0]


def test_blas_time_is_positive_and_table_shows_the_ratio() -> None:
    blas_s = training.BlasLimit().window_s(steps=1)
    assert blas_s > 0
    row = {"world": 1, "threads_per_rank": 1, "distnet_samples_per_s": 1000.0,
           "step_ms": 2.0 * blas_s * 1e3, "blas_ms_per_step": blas_s * 1e3,
           "step_over_blas": 1.875, "blas_gflops": 100.0, "step_gflops": 50.0}
    text = training._table([row])
    assert "step/blas" in text and "1.875" in text  # the paired median, not the best/best


def test_overhead_pairs_each_window_with_the_unwatched_one_of_its_cycle() -> None:
    # Cycle 2 is slowed 2x for every mode (outside load): paired ratios are unaffected by it,
    # whereas comparing the modes' medians across cycles would not be.
    windows = {"none": [1.0, 2.0, 1.0], "straggler": [1.01, 2.02, 1.01],
               "trace": [1.05, 2.10, 1.05]}
    row = training.overhead_row(world=2, steps=10, windows=windows)
    assert row["cycles"] == 3
    assert abs(row["straggler_cost_median"] - 0.01) < 1e-12
    assert abs(row["trace_cost_median"] - 0.05) < 1e-12
    assert row["none_cost_median"] == 0.0
    assert abs(row["trace_ratio_best"] - 1 / 1.05) < 1e-12
    text = training._overhead_table([row])
    assert "+5.00%" in text and "+1.00%" in text


@pytest.mark.parametrize("flags,fused", [([], True), (["--unfused"], False)])
def test_world_one_worker_steps_inside_backward_unless_unfused(flags: list[str],
                                                               fused: bool) -> None:
    res = mpi_python(1, "-m", "distnet.bench.training", "--worker", "distnet", "--steps", "2",
                     "--warmup", "1", "--repeats", "1", *flags, timeout_s=120)
    assert not res.timed_out and res.returncode == 0, res.stdout + res.stderr
    report = json.loads([ln for ln in res.stdout.splitlines() if ln.startswith("{")][-1])
    assert report["fused_update"] is fused
    assert report["world"] == 1 and report["step_ms"] > 0 and report["blas_ms_per_step"] > 0
    assert report["step_over_blas"] > 0

"""The machine calibration model: recovers known parameters, errors are model/measured - 1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distnet.common.errors import UserError
from topology.calibrate import (
    EAGER_LIMIT_BYTES,
    MACHINE_TERMS,
    error_summary,
    fit_machine,
    machine_sim_vs_measured,
    machine_synthetic_records,
    schedule_shape,
)
from topology.cli import main

TRUTH = {"alpha_s": 1e-6, "alpha_oversub_s": 3e-6, "alpha_rendezvous_s": 2e-6,
         "beta_core_s_per_byte": 4e-11, "beta_bus_s_per_byte": 2e-11, "gamma_s_per_byte": 7e-11}
SIZES = (1024, 65536, 1 << 20, 4 << 20, 16 << 20)


@pytest.fixture(scope="module")
def synthetic() -> list[dict]:
    return machine_synthetic_records(TRUTH, cores=2, knee_bytes=4 << 20, ranks=(2, 3, 4),
                                     sizes=SIZES)


def test_shape_counts_parallel_ports_and_the_largest_message() -> None:
    ring = schedule_shape("ring", 4, 1 << 20)
    assert ring.concurrency == pytest.approx(4.0)  # every rank sends a chunk at once
    assert ring.max_message_bytes == (1 << 20) // 4
    naive = schedule_shape("naive", 4, 1 << 20)
    assert naive.concurrency == pytest.approx(1.0)  # rank 0's port serialises everything
    assert naive.max_message_bytes == 1 << 20
    assert schedule_shape("ring", 2, 2 * EAGER_LIMIT_BYTES).max_message_bytes == EAGER_LIMIT_BYTES


def test_machine_fit_recovers_known_parameters_and_knee(synthetic: list[dict]) -> None:
    mf = fit_machine(synthetic, cores=2)
    assert mf.knee_bytes == 4 << 20  # 8 MiB splits these sizes the same way; the smaller wins
    for term in MACHINE_TERMS:
        assert mf.coef[term] == pytest.approx(TRUTH[term], rel=1e-6), term
    assert max(abs(r["error"]) for r in mf.records) < 1e-9


def test_simulator_replay_with_effective_parameters_agrees(synthetic: list[dict]) -> None:
    few = [r for r in synthetic if r["bytes"] in (65536, 16 << 20)]
    checked = machine_sim_vs_measured(fit_machine(few, cores=2))
    # not exact: at p = 3 the schedules cut the buffer into uneven chunks, the forms use n/p
    assert max(abs(c["sim_error"]) for c in checked) < 1e-3


def test_more_cores_remove_the_oversubscription_terms(synthetic: list[dict]) -> None:
    mf = fit_machine(synthetic, cores=2)
    alpha2, beta2, gamma2 = mf.effective({"algorithm": "ring", "ranks": 4, "bytes": 16 << 20})
    assert alpha2 == pytest.approx(sum(TRUTH[k] for k in MACHINE_TERMS[:3]))
    # 4 parallel transfers on 2 cores: twice the core time, and four streams on the DRAM bus
    assert beta2 == pytest.approx(2 * 4e-11 + 4 * 2e-11)
    assert gamma2 == pytest.approx(2 * 7e-11)


def test_error_summary_is_relative_error_per_world_size() -> None:
    # measured 10, 10, 10, 10 against model 11, 8, 13, 10: errors +10 %, -20 %, +30 %, 0 %
    errs = [11 / 10 - 1, 8 / 10 - 1, 13 / 10 - 1, 0.0]
    s = error_summary(errs, [2, 2, 4, 4])
    assert s[2] == pytest.approx({"median": 0.15, "max": 0.20, "within_20": 2, "n": 2})
    assert s[4] == pytest.approx({"median": 0.15, "max": 0.30, "within_20": 1, "n": 2})
    assert s["all"]["within_20"] == 3 and s["all"]["median"] == pytest.approx(0.15)


def test_machine_fit_rejects_bad_input(synthetic: list[dict]) -> None:
    with pytest.raises(UserError, match="cores"):
        fit_machine(synthetic, cores=0)
    with pytest.raises(UserError, match="closed form"):
        fit_machine([{**synthetic[0], "algorithm": "native"}], cores=2)


def test_cli_machine_model(tmp_path: Path, synthetic: list[dict],
                           capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "b.json"
    path.write_text(json.dumps([r for r in synthetic if r["bytes"] in (65536, 16 << 20)]))
    assert main(["calibrate", str(path), "--model", "machine", "--cores", "2"]) == 0
    out = capsys.readouterr().out
    assert "machine fit over 30 records, 2 cores" in out
    assert "simulator p=4: median |error| 0.0%" in out and "simulator p=all" in out

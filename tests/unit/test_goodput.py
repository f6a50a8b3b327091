"""Goodput under failures: the closed forms against the seeded Monte Carlo of the same model
(within 2 %), the closed forms against hand-derived limits, and Young/Daly's optimum."""

from __future__ import annotations

import math

import pytest

from distnet.analysis import goodput as gp
from distnet.analysis.goodput import Cluster, closed_forms
from distnet.analysis.montecarlo import restart_run, simulate
from distnet.common.errors import UserError


def stressed(n: int, ranks_per_node: int = 1, **kw) -> Cluster:
    """A failure every half hour: goodput far from 1, so 2 % is a real bound."""
    base = dict(ranks=n, ranks_per_node=ranks_per_node, node_mtbf_s=n / ranks_per_node * 1800.0,
                compute_s=0.4, fixed_s=0.1, checkpoint_s=15.0, restart_s=60.0, detect_s=5.0,
                shrink_s=0.5, horizon_s=3 * 86400.0, grow_every_s=4 * 3600.0,
                user_interval_steps=600)
    base.update(kw)
    return Cluster(**base)


@pytest.mark.parametrize("cluster,runs", [
    (stressed(16, horizon_s=86400.0), 2500), (stressed(256), 24),
    (stressed(1024, ranks_per_node=4, node_mtbf_s=256 * 3600.0), 24),
    (stressed(64, node_mtbf_s=64 * 600.0, horizon_s=86400.0, grow_every_s=3600.0), 48),
], ids=["16", "256", "1024x4", "64-harsh"])
def test_monte_carlo_matches_closed_forms_within_2_percent(cluster, runs):
    # few nodes make a noisy job: more runs so that sampling error stays well below 2 %
    cf = closed_forms(cluster)
    mc = simulate(cluster, runs=runs, seed=5)
    for name in gp.STRATEGIES:
        assert 0.02 < cf[name] < 0.995, (name, cf[name])  # failures matter here
        assert mc[name].mean == pytest.approx(cf[name], rel=0.02), (name, mc[name], cf[name])


def test_monte_carlo_is_seeded():
    c = stressed(64)
    assert simulate(c, runs=3, seed=1) == simulate(c, runs=3, seed=1)
    assert simulate(c, runs=3, seed=1) != simulate(c, runs=3, seed=2)


def test_restart_closed_form_limits():
    # no failures: only the checkpoints cost
    assert gp.restart_goodput(100.0, 5.0, 60.0, 1e15) == pytest.approx(100 / 105, rel=1e-9)
    # Daly's expression and Young's first-order one agree when δ, τ, R << M
    assert gp.restart_goodput(1000.0, 0.1, 10.0, 1e7) == pytest.approx(
        gp.restart_goodput_first_order(1000.0, 0.1, 10.0, 1e7), abs=1e-6)


def test_daly_interval_is_the_optimum_and_young_its_first_order():
    for d, m in ((1.0, 1e5), (30.0, 3600.0), (120.0, 900.0)):
        best = gp.daly_interval_s(d, m)
        g_best = gp.restart_goodput(best, d, 10.0, m)
        for f in (0.5, 0.8, 1.25, 2.0):
            assert gp.restart_goodput(f * best, d, 10.0, m) < g_best
    assert gp.daly_interval_s(1.0, 1e8) == pytest.approx(gp.young_interval_s(1.0, 1e8), rel=1e-3)
    assert gp.daly_interval_s(500.0, 100.0) == 100.0  # δ >= 2M: checkpoint every M


def test_shrink_closed_form_against_hand_derivation():
    # ρ = 1 (no compute to redistribute) and no node death likely enough to empty the job:
    # goodput = 1 − c·m·(1 − e^{−H/μ}) / H
    c = Cluster(ranks=100, ranks_per_node=1, node_mtbf_s=2e5, compute_s=0.0, fixed_s=0.2,
                checkpoint_s=1.0, restart_s=1.0, detect_s=5.0, shrink_s=1.0, horizon_s=1e5,
                grow_every_s=1e4, user_interval_steps=10)
    cost = 5.0 + 1.0 + 0.1
    want = 1 - cost * 100 * -math.expm1(-1e5 / 2e5) / 1e5
    assert gp.shrink_goodput(c) == pytest.approx(want, rel=1e-9)


def test_shrink_capacity_decay_with_compute_only():
    # all compute and (almost) free recovery: ρ(a) = a/m is linear, so E[ρ(A)] = e^{−t/μ}
    c = Cluster(ranks=1000, ranks_per_node=1, node_mtbf_s=1e5, compute_s=0.01, fixed_s=0.0,
                checkpoint_s=0.0, restart_s=0.0, detect_s=0.0, shrink_s=0.0, horizon_s=1e5,
                grow_every_s=1e4, user_interval_steps=10)
    # goodput = 1/H ∫ e^{−t/μ} dt (half a 10 ms step lost per failure: 5e-5 of it)
    want = -math.expm1(-1.0)
    assert gp.shrink_goodput(c) == pytest.approx(want, rel=1e-3)


def test_grow_back_beats_plain_shrink_over_a_long_job():
    c = stressed(256, horizon_s=30 * 86400.0)
    cf = closed_forms(c)
    assert cf["shrink-grow"] > cf["shrink"]


def test_restart_run_without_failures_is_tau_over_segment():
    import numpy as np

    g = restart_run(np.random.default_rng(0), 100.0, 5.0, 60.0, 1e18, 1e6)
    assert g == pytest.approx(100 / 105, rel=1e-3)


@pytest.mark.parametrize("field,value", [
    ("ranks", 0), ("node_mtbf_s", 0.0), ("node_mtbf_s", float("nan")), ("horizon_s", -1.0),
    ("checkpoint_s", float("inf")), ("detect_s", -1.0), ("user_interval_steps", 0),
])
def test_cluster_refuses_bad_values(field, value):
    with pytest.raises(UserError):
        stressed(value) if field == "ranks" else stressed(16, **{field: value})

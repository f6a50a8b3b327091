"""analysis/projection.py and training/breakdown.py: metrics validation, the step-time model,
the simulator
as communication model (stubbed and real), crossover, and the end-of-run breakdown."""

from __future__ import annotations

import math

import numpy as np
import pytest

from distnet.analysis import projection as pj
from distnet.common.errors import UserError
from distnet.training.breakdown import breakdown, busbw_factor, format_breakdown
from topology.calibrate import star as one_switch


def step(i: int, local: int = 32, fwd: float = 0.002, bwd: float = 0.004, opt: float = 0.001,
         comm: float = 0.003, nbytes: int = 4000, world: int = 2) -> dict:
    return {"schema": 1, "event": "step", "epoch": 0, "step": i, "forward_s": fwd,
            "backward_s": bwd, "allreduce_s": comm, "optim_s": opt, "bytes": nbytes,
            "algorithm": "ring", "samples": local * world, "local_samples": local,
            "world_size": world}


def records(n_steps: int = 5) -> list[dict]:
    out = [step(i, fwd=0.002 + (0.01 if i == 1 else 0.0)) for i in range(1, n_steps + 1)]
    out.append(step(n_steps + 1, local=7, fwd=0.0005))  # short last batch: ignored
    out.append({"schema": 1, "event": "done", "world_size": 2, "param_count": 500,
                "grad_bytes": 4000, "algorithm": "ring"})
    return out


PROFILE = pj.profile_from_records(records())


def zero_comm(algorithm: str, ranks: int, nbytes: int) -> float:
    return 0.0


# ---- reading and validating ---------------------------------------------------------------
def test_profile_uses_medians_of_full_batches():
    assert PROFILE.batch_per_rank == 32
    assert PROFILE.forward_s == pytest.approx(0.002)  # the warm-up outlier is not the median
    assert (PROFILE.backward_s, PROFILE.optim_s, PROFILE.allreduce_s) == (0.004, 0.001, 0.003)
    assert PROFILE.itemsize == 8  # 4000 bytes / 500 parameters
    assert PROFILE.grad_bytes == 4000 and PROFILE.world_size == 2 and PROFILE.steps == 6


def test_last_run_of_an_appended_file_wins():
    later = [dict(r, backward_s=0.008) if r["event"] == "step" else r for r in records()]
    assert pj.profile_from_records(records() + later).backward_s == 0.008


@pytest.mark.parametrize("bad, words", [
    ([{"event": "step"}], "no schema version"),
    ([dict(step(1), schema=0)], "schema 0"),
    ([{"schema": 1, "event": "epoch"}, {"schema": 1, "event": "done"}], "--profile"),
    ([{k: v for k, v in step(1).items() if k != "backward_s"}], "lacks backward_s"),
    ([], "no records"),
])
def test_bad_metrics_are_one_clear_error(bad, words):
    with pytest.raises(UserError, match=words):
        pj.profile_from_records(bad)


def test_load_profile_file_errors(tmp_path):
    with pytest.raises(UserError, match="cannot read"):
        pj.load_profile(str(tmp_path / "missing.jsonl"))
    junk = tmp_path / "junk.jsonl"
    junk.write_text("{not json\n")
    with pytest.raises(UserError, match="not a JSON Lines"):
        pj.load_profile(str(junk))


# ---- the step-time model ------------------------------------------------------------------
def test_compute_scales_forward_backward_but_not_optimiser():
    f, b, o = pj.compute_step_s(PROFILE, 64)
    assert (f, b, o) == pytest.approx((0.004, 0.008, 0.001))
    with pytest.raises(UserError):
        pj.compute_step_s(PROFILE, 0)


def test_zero_communication_gives_compute_time():
    rows = pj.project(PROFILE, [1, 2, 64, 4096], ["ring", "tree"], zero_comm)
    for r in rows:
        assert r.step_s == pytest.approx(PROFILE.compute_s)
        assert r.step_overlap_s == pytest.approx(PROFILE.compute_s)
        assert r.efficiency == pytest.approx(1.0)
        assert r.samples_per_s == pytest.approx(r.ranks * 32 / PROFILE.compute_s)


def test_overlap_pipeline_by_hand():
    # ready at 2, 3, 5; finish max(2,1)+1=3, max(3,3)+1=4, max(5,4)+1=6; + optimiser 0.5
    assert pj.overlapped_step_s(1.0, 4.0, 0.5, [1, 1, 2], [1.0, 1.0, 1.0]) == 6.5
    # everything hides except what is in flight when backward ends
    assert pj.overlapped_step_s(1.0, 4.0, 0.5, [1, 1, 2], [0.1, 0.1, 0.1]) == pytest.approx(5.6)


def test_buckets_tile_the_gradient_tail_first():
    sizes = pj.bucket_bytes_list(10 * pj.MIB + 12, 4, 4 * pj.MIB, pj.MIB)
    assert sum(sizes) == 10 * pj.MIB + 12
    assert sizes[0] == pj.MIB and sizes[1] == 4 * pj.MIB


def test_one_rank_never_communicates():
    calls = []
    row = pj.project(PROFILE, [1], ["ring"], lambda *a: calls.append(a) or 1.0)[0]
    assert calls == [] and row.step_s == PROFILE.compute_s


def test_crossover_interpolates_in_log_space():
    def comm(alg: str, p: int, nbytes: int) -> float:
        return PROFILE.compute_s * p / 100  # comm = compute at exactly p = 100

    rows = pj.project(PROFILE, [8, 64, 512], ["ring"], comm)
    assert pj.crossover(rows, "ring") == pytest.approx(100.0)
    assert pj.crossover(rows, "tree") is None
    assert pj.crossover(pj.project(PROFILE, [8], ["ring"], comm), "ring") is None


# ---- the simulator as the communication model ---------------------------------------------
def test_projection_replays_schedules_of_the_right_size(monkeypatch):
    import topology.sim

    seen = []

    class Fake:
        time_s = 0.25

    def fake_simulate(net, schedule, placement, **kw):
        seen.append((schedule.name, schedule.p, schedule.n, len(placement), kw["itemsize"]))
        return Fake()

    monkeypatch.setattr(topology.sim, "simulate", fake_simulate)
    model = pj.NetModel(one_switch(16, 100.0))
    big = pj.profile_from_records([step(i, nbytes=3 * pj.MIB) for i in range(3)])
    rows = pj.project(big, [1, 4, 16], ["ring"], pj.simulator_comm(model, big.itemsize))
    n = 3 * pj.MIB // 4
    assert ("ring", 4, n, 4, 4) in seen and ("ring", 16, n, 16, 4) in seen
    buckets = {s[2] for s in seen} - {n}
    assert buckets == {pj.MIB // 4, 2 * pj.MIB // 4}  # 1 MiB first bucket, 2 MiB remainder
    assert all(s[1] in (4, 16) for s in seen)  # never simulated for one rank
    assert rows[1].comm_s == 0.25 and rows[0].comm_s == 0.0


def test_infinite_network_projects_pure_compute():
    model = pj.NetModel(one_switch(8, 1e12), alpha_s=0.0, gamma_s_per_byte=0.0)
    rows = pj.project(PROFILE, [2, 4, 8], ["ring"], pj.simulator_comm(model, 4))
    for r in rows:
        assert r.step_s == pytest.approx(PROFILE.compute_s, rel=1e-6)
        assert r.step_overlap_s == pytest.approx(PROFILE.compute_s, rel=1e-6)


def test_ring_never_gets_cheaper_with_more_ranks_on_a_fixed_network():
    model = pj.NetModel(one_switch(64, 100.0), alpha_s=1e-6, gamma_s_per_byte=1e-11)
    comm = pj.simulator_comm(model, 4)
    times = [comm("ring", p, 4 * 100_003) for p in (2, 3, 4, 6, 8, 16, 32, 64)]
    assert all(b >= a for a, b in zip(times, times[1:], strict=False))
    assert times[0] > 0


def test_ring_on_one_switch_matches_the_closed_form():
    from distnet.allreduce.cost import ring

    alpha, gbps, gamma, nbytes = 2e-6, 80.0, 1e-11, 4 * 1_000_000
    model = pj.NetModel(one_switch(8, gbps), alpha_s=alpha, gamma_s_per_byte=gamma)
    got = pj.simulated_allreduce_s(model, "ring", 8, nbytes, 4)
    assert got == pytest.approx(ring(8, nbytes).seconds(alpha, 8 / (gbps * 1e9), gamma), rel=1e-6)


def test_hierarchical_nodes_are_racks():
    from topology.builders import fat_tree
    from topology.placement import node_of_ranks

    net = fat_tree(4)  # 2 hosts per edge switch
    nodes = node_of_ranks(net, np.arange(8))
    assert nodes[0] == nodes[1] != nodes[2] == nodes[3]


def test_too_many_ranks_for_the_network():
    with pytest.raises(UserError, match="do not fit"):
        pj.simulated_allreduce_s(pj.NetModel(one_switch(4, 10.0)), "ring", 8, 4096, 4)


def test_compare_topologies_gives_one_row_per_variant():
    variants = [pj.Variant("fast", pj.NetModel(one_switch(8, 400.0))),
                pj.Variant("slow", pj.NetModel(one_switch(8, 10.0)))]
    rows = pj.compare_topologies(PROFILE, 8, "ring", variants)
    assert [r["topology"] for r in rows] == ["fast", "slow"]
    assert rows[0]["comm_s"] < rows[1]["comm_s"]


# ---- the end-of-run breakdown -------------------------------------------------------------
def test_breakdown_shares_and_bandwidth():
    b = breakdown(records())
    assert b["steps"] == 6 and b["world_size"] == 2
    assert b["compute_share"] + b["comm_share"] == pytest.approx(1.0)
    assert b["algbw_gbps"] == pytest.approx(4000 / 0.003 / 1e9)
    assert b["busbw_gbps"] == pytest.approx(b["algbw_gbps"] * busbw_factor(2))
    text = format_breakdown(b)
    assert "all-reduce" in text and "busbw" in text and "%" in text


def test_breakdown_without_profile_and_on_one_rank():
    assert breakdown([{"schema": 1, "event": "done"}]) == {}
    assert "--profile" in format_breakdown({})
    one = breakdown([step(1, world=1, comm=0.0)])
    assert one["busbw_gbps"] is None and math.isclose(one["comm_share"], 0.0)
    assert "busbw" not in format_breakdown(one)


def test_oversubscribed_machine_time_shares_its_cores():
    def comm(alg: str, p: int, nbytes: int) -> float:
        return 0.001

    rows = pj.project(PROFILE, [2, 8], ["ring"], comm, shared_cores=2)
    assert rows[0].step_s == pytest.approx(PROFILE.compute_s + 0.001)  # fits: no change
    assert rows[1].step_s == pytest.approx(4 * (PROFILE.compute_s + 0.001))  # 8 ranks, 2 cores
    assert rows[1].step_overlap_s == pytest.approx(4 * (PROFILE.compute_s + 0.001))
    with pytest.raises(UserError, match="cores"):
        pj.project(PROFILE, [2], ["ring"], comm, shared_cores=0)

"""The flow-level simulator: exact event logs, ECMP collisions, engines agreeing, closed forms."""

import numpy as np
import pytest

from distnet.allreduce.cost import cost_s
from distnet.allreduce.schedule import Schedule, chunk_bounds, from_steps, make_step
from distnet.common.errors import UserError
from topology.builders import fat_tree
from topology.network import Network, make_network
from topology.routing import route
from topology.sim import simulate

US = 1e-6


def star(gbps: float = 8.0) -> Network:
    """Three hosts on one switch: 8 Gb/s = 1e9 B/s, 0.25 us per link, 0.5 us per switch."""
    names = [("host", 0), ("host", 1), ("host", 2), ("edge", 0)]
    return make_network("star", names, np.array([0, 0, 0, 1]), np.array([0, 1, 2]),
                        np.array([3, 3, 3]), np.array(gbps), np.array(0.25 * US), 0.5 * US)


def leaf_spine() -> Network:
    """Hosts 0,1 on leaf 0 and 2,3 on leaf 1, two spines: two equal-cost paths between leaves."""
    names = [("host", i) for i in range(4)] + [("leaf", 0), ("leaf", 1), ("spine", 0),
                                               ("spine", 1)]
    tier = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    u = np.array([0, 1, 2, 3, 4, 4, 5, 5])
    v = np.array([4, 4, 5, 5, 6, 7, 6, 7])
    return make_network("ls", names, tier, u, v, np.array(8.0), np.array(0.25 * US), 0.5 * US)


def ring(p: int, n: int) -> Schedule:
    """A local ring schedule, so these tests do not depend on the algorithm files."""
    bounds, pos = chunk_bounds(n, p), np.arange(p)

    def step(s: int):
        chunk, red = ((pos - s) % p, True) if s < p - 1 else ((pos + 1 - (s - p + 1)) % p, False)
        return make_step(pos, (pos + 1) % p, bounds[chunk], bounds[chunk + 1] - bounds[chunk], red)

    def pattern(s: int) -> tuple:
        # uneven chunks: which rank sends the bigger ones changes with the step
        return ("ring", p, n) if n % p == 0 else ("ring", p, n, (s if s < p - 1 else s - p) % p)

    return Schedule("ring", p, n, 2 * (p - 1), step, pattern)


def tiny_schedule() -> Schedule:
    return from_steps("tiny", 3, 1000, [
        make_step([0, 2], [1, 1], 0, 1000, True),  # incast into rank 1, two reductions
        make_step([1], [0], 0, 1000, False),
        make_step([0], [2], 0, 500, False),  # rank 2 skipped step 1: it waits only for rank 0
    ])


def test_exact_event_log_on_a_star() -> None:
    res = simulate(star(), tiny_schedule(), np.arange(3), itemsize=1, alpha_s=1 * US,
                   gamma_s_per_byte=1e-9, log=True)
    expected = [
        (0, "start", 0, 0, 1), (0, "start", 0, 2, 1),
        (3, "drain", 0, 0, 1), (3, "drain", 0, 2, 1),  # 1000 B each at half of 1e9 B/s
        (5, "done", 0, 0, 1), (6, "done", 0, 2, 1),  # +1 us path, reductions one at a time
        (6, "start", 1, 1, 0), (8, "drain", 1, 1, 0), (9, "done", 1, 1, 0),
        (9, "start", 2, 0, 2), (10.5, "drain", 2, 0, 2), (11.5, "done", 2, 0, 2),
    ]
    assert res.log is not None
    assert [e[1:] for e in res.log] == [e[1:] for e in expected]
    assert [e[0] for e in res.log] == pytest.approx([e[0] * US for e in expected], rel=1e-12)
    assert res.time_s == pytest.approx(11.5 * US, rel=1e-12)
    again = simulate(star(), tiny_schedule(), np.arange(3), itemsize=1, alpha_s=1 * US,
                     gamma_s_per_byte=1e-9, log=True)
    assert again.log == res.log  # deterministic to the bit


def test_fast_engine_matches_the_log_when_steps_start_together() -> None:
    fast = simulate(star(), tiny_schedule(), np.arange(3), itemsize=1, alpha_s=1 * US,
                    gamma_s_per_byte=1e-9, engine="fast")
    assert fast.time_s == pytest.approx(11.5 * US, rel=1e-12)
    assert fast.step_end_s == pytest.approx(np.array([6, 9, 11.5]) * US, rel=1e-12)


def _pair_seeds(net) -> tuple[int, int]:
    """A seed where flows 0->2 and 1->3 hash onto the same spine, and one where they do not."""
    same = differ = None
    for seed in range(64):
        r = route(net, np.array([0, 1]), np.array([2, 3]), mode="ecmp", seed=seed)
        shared = set(r.links_of(0).tolist()) & set(r.links_of(1).tolist())
        if shared and same is None:
            same = seed
        if not shared and differ is None:
            differ = seed
    assert same is not None and differ is not None
    return same, differ


@pytest.mark.parametrize("engine", ["exact", "fast"])
def test_ecmp_collision_halves_the_bandwidth(engine: str) -> None:
    net = leaf_spine()
    sched = from_steps("pair", 4, 10**6, [make_step([0, 1], [2, 3], 0, 10**6, False)])
    same, differ = _pair_seeds(net)
    lat = 4 * 0.25 * US + 3 * 0.5 * US
    t = {}
    for name, seed in (("same", same), ("differ", differ)):
        res = simulate(net, sched, np.arange(4), seed=seed, itemsize=1, alpha_s=0.0,
                       gamma_s_per_byte=0.0, engine=engine)
        t[name] = res.time_s - lat
    assert t["differ"] == pytest.approx(1e-3, rel=1e-12)  # 1 MB at 1e9 B/s
    assert t["same"] == pytest.approx(2e-3, rel=1e-12)  # two flows on one uplink: half each
    ideal = simulate(net, sched, np.arange(4), routing="ideal", itemsize=1, alpha_s=0.0,
                     gamma_s_per_byte=0.0, engine=engine)
    assert ideal.time_s - lat == pytest.approx(1e-3, rel=1e-12)


def test_memoised_and_unmemoised_fast_runs_are_identical() -> None:
    net = fat_tree(4)
    placement = np.random.default_rng(3).permutation(16)
    sched = ring(16, 16 * 4096)
    a = simulate(net, sched, placement, engine="fast", memoise=True)
    b = simulate(net, sched, placement, engine="fast", memoise=False)
    assert a.patterns_solved == 1 and a.steps_reused == sched.nsteps - 1
    assert b.patterns_solved == sched.nsteps
    assert a.time_s == b.time_s
    assert np.array_equal(a.step_end_s, b.step_end_s)
    assert np.array_equal(a.link_bytes, b.link_bytes)


@pytest.mark.parametrize("routing", ["ideal", "ecmp", "dmodk"])
def test_engines_agree_when_flows_do_not_share_links(routing: str) -> None:
    # packed ring on a fat-tree: every link carries at most one ring flow, so overlap between
    # neighbouring steps cannot change a rate and both engines must give the same times
    net = fat_tree(4)
    sched = ring(16, 16 * 1000 + 5)
    ex = simulate(net, sched, np.arange(16), routing=routing, engine="exact")
    fa = simulate(net, sched, np.arange(16), routing=routing, engine="fast")
    assert fa.time_s == pytest.approx(ex.time_s, rel=1e-12)
    assert fa.step_end_s == pytest.approx(ex.step_end_s, rel=1e-12)
    assert fa.link_bytes == pytest.approx(ex.link_bytes, rel=1e-12)


def test_ring_matches_its_closed_form_and_bandwidth_numbers() -> None:
    net = fat_tree(4)
    p, n = 16, 16 * 65536
    res = simulate(net, ring(p, n), np.arange(p), routing="ideal", alpha_s=2 * US,
                   gamma_s_per_byte=1e-11)
    worst = float(route(net, np.arange(p), (np.arange(p) + 1) % p, mode="ideal").latency_s.max())
    want = cost_s("ring", p, 4 * n, 2 * US, 8 / 400e9, 1e-11, worst)
    assert res.time_s == pytest.approx(want, rel=1e-9)
    assert res.algbw_gbps == pytest.approx(4 * n * 8 / res.time_s / 1e9)
    assert res.busbw_gbps == pytest.approx(res.algbw_gbps * 2 * (p - 1) / p)
    assert 0 < res.max_link_util <= 1.0
    assert res.busiest and "->" in res.busiest[0][0]


def test_ranks_on_one_host_cost_only_overheads() -> None:
    sched = from_steps("self", 2, 10, [make_step([0], [1], 0, 10, True)])
    res = simulate(star(), sched, np.array([1, 1]), itemsize=1, alpha_s=1 * US,
                   gamma_s_per_byte=0.0)
    assert res.time_s == pytest.approx(1 * US)
    assert res.link_bytes.sum() == 0


def test_bad_inputs_are_user_errors() -> None:
    with pytest.raises(UserError, match="placement"):
        simulate(star(), tiny_schedule(), np.arange(2))
    with pytest.raises(UserError, match="outside"):
        simulate(star(), tiny_schedule(), np.array([0, 1, 7]))
    with pytest.raises(UserError, match="engine"):
        simulate(star(), tiny_schedule(), np.arange(3), engine="warp")
    with pytest.raises(UserError, match="routing"):
        simulate(star(), tiny_schedule(), np.arange(3), routing="magic")


def _worst_latency(net: Network, sched: Schedule, placement: np.ndarray) -> float:
    src = np.concatenate([st.src for st in sched.steps()])
    dst = np.concatenate([st.dst for st in sched.steps()])
    return float(route(net, placement[src], placement[dst], mode="ideal").latency_s.max())


@pytest.mark.parametrize("algorithm", ["ring", "tree", "recursive_doubling", "rabenseifner"])
@pytest.mark.parametrize("p", [8, 12, 32])
def test_sim_within_one_percent_of_closed_form_on_a_nonblocking_fat_tree(
    algorithm: str, p: int
) -> None:
    from distnet.allreduce import get_schedule

    # Closed forms charge every message one latency L; the simulator charges each message its
    # own path and a step waits for its slowest one. With L = the worst path they agree to
    # within the latency share, which 64 MiB makes tiny; with latency-free links, exactly.
    n = 16 * 2**20
    placement = np.random.default_rng(p).permutation(128)[:p]
    sched = get_schedule(algorithm)(p, n)
    alpha_s, gamma = 1 * US, 5e-12
    for lat_s in (0.0, 0.5 * US):
        net = fat_tree(8, link_latency_s=lat_s, switch_latency_s=lat_s)
        res = simulate(net, sched, placement, routing="ideal", alpha_s=alpha_s,
                       gamma_s_per_byte=gamma)
        want = cost_s(algorithm, p, 4 * n, alpha_s, 8 / 400e9, gamma,
                                _worst_latency(net, sched, placement))
        assert res.time_s == pytest.approx(want, rel=0.01)
        if lat_s == 0.0:
            assert res.time_s == pytest.approx(want, rel=1e-6)


def test_ecmp_loses_to_ideal_spreading_for_a_scattered_ring_on_k8() -> None:
    # the known ECMP loss: a ring is as slow as its worst hash collision in every step
    from distnet.allreduce import get_schedule
    from topology.placement import place

    net = fat_tree(8)
    hosts = place(net, 128, mode="scattered")
    sched = get_schedule("ring")(128, 128 * 65536)
    t = {r: simulate(net, sched, hosts, routing=r, seed=0).time_s for r in ("ecmp", "ideal")}
    worst = float(route(net, hosts, np.roll(hosts, -1), mode="ideal").latency_s.max())
    want = cost_s("ring", 128, 4 * 128 * 65536, 1 * US, 8 / 400e9, 5e-12, worst)
    assert t["ideal"] == pytest.approx(want, rel=1e-9)
    assert t["ecmp"] > 1.5 * t["ideal"]


def test_reference_engine_refuses_huge_schedules() -> None:
    with pytest.raises(UserError, match="exact"):
        simulate(fat_tree(16), ring(1024, 1024), np.arange(1024), engine="reference")

"""Replaying the simulator on measured paths (no root needed): a table holding the simulator's
own D-mod-k paths must give exactly the simulator's D-mod-k time; a table that piles two flows
onto one spine must be slower; calibration files are hostile input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from distnet.allreduce import get_schedule
from distnet.common.errors import UserError
from topology import sim
from topology.emulate import paths, validate
from topology.routing import route
from topology.spec import parse_network

SPEC = "leaf-spine:leaves=2,spines=2,hosts=2"


def _table(net, mode: str) -> dict[tuple[int, int], list[int]]:
    n = net.n_hosts
    pairs = [(s, d) for s in range(n) for d in range(n) if s != d]
    r = route(net, np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs]), mode=mode)
    return {p: r.links_of(f).tolist() for f, p in enumerate(pairs)}


def test_replay_of_the_simulators_own_paths_is_exact() -> None:
    net = parse_network(SPEC, link_gbps=0.2)
    sched = get_schedule("ring")(4, 1 << 20)
    hosts = np.array([0, 2, 1, 3])
    want = sim.simulate(net, sched, hosts, routing="dmodk", memoise=False).time_s
    got = sim.simulate(net, sched, hosts, memoise=False,
                       route_fn=paths.pinned_routes(net, _table(net, "dmodk"))).time_s
    assert got == pytest.approx(want, rel=1e-12)


def test_replay_sees_a_collision_the_table_forces() -> None:
    net = parse_network(SPEC, link_gbps=0.2)
    hosts = np.array([0, 2, 1, 3])  # h0->h2 and h1->h3 both leave leaf0
    table = _table(net, "dmodk")
    via_spine0 = {}
    for (s, d), links in table.items():
        if s // 2 != d // 2:  # crosses the spines
            leaf, spine = 4 + s // 2, 6  # nodes: 4 hosts, 2 leaves, 2 spines
            up = 2 * net.cable(leaf, spine)
            down = 2 * net.cable(4 + d // 2, spine) + 1
            via_spine0[(s, d)] = [links[0], up, down, links[-1]]
    spread = validate.simulate_point(SPEC, validate.Calibration(0.0, 1.0, 1.0, 0.2), "ring",
                                     1 << 20, hosts.tolist(), table)[0]
    piled = validate.simulate_point(SPEC, validate.Calibration(0.0, 1.0, 1.0, 0.2), "ring",
                                    1 << 20, hosts.tolist(), {**table, **via_spine0})[0]
    assert piled > 1.5 * spread


@pytest.mark.parametrize("content", ["{}", "[1]", "not json",
                                     json.dumps({"alpha_s": -1, "efficiency": 0.9,
                                                 "wire_overhead": 1.0, "rate_gbps": 0.2}),
                                     json.dumps({"alpha_s": 0.001, "efficiency": float("nan"),
                                                 "wire_overhead": 1.0, "rate_gbps": 0.2})])
def test_bad_calibration_file_is_refused(content: str, tmp_path) -> None:
    p = tmp_path / "cal.json"
    p.write_text(content)
    with pytest.raises(UserError):
        validate.load_calibration(str(p))


def test_ss_parse_keeps_each_connections_bytes_sent() -> None:
    """Two ranks per host open two connections between a host pair; the bytes each sent tell
    the node leaders' one (the data) from the other (barriers): paths.connection_paths keeps
    the busiest. Loopback and other addresses are not the data network."""
    from distnet.bench.emulated import parse_ss

    text = ("0 0 198.18.0.0:40000 198.18.0.4:1024\n"
            "\t cubic wscale:7,7 rto:204 bytes_sent:1200 bytes_acked:1200 segs_out:9\n"
            "0 0 198.18.0.0:40001 198.18.0.4:1025\n"
            "\t cubic wscale:7,7 rto:204 bytes_sent:9000000 bytes_acked:9000000\n"
            "0 0 127.0.0.1:5000 127.0.0.1:5001\n\t cubic bytes_sent:5\n")
    conns = parse_ss(text)
    assert conns == [["198.18.0.0", 40000, "198.18.0.4", 1024, 1200],
                     ["198.18.0.0", 40001, "198.18.0.4", 1025, 9000000]]


def test_hierarchical_replay_uses_the_mpi_runs_leader_ring() -> None:
    """Scattered with 2 ranks per host puts ranks 4, 5 on host 1: the MPI run's leader ring is
    0 -> 2 -> 4 -> 6 (node ids = smallest rank), i.e. hosts 0 -> 2 -> 1 -> 3, all four flows
    between the leaves; labelled by host number the ring would be 0 -> 1 -> 2 -> 3 (two)."""
    net = parse_network(SPEC, link_gbps=0.2)
    cal = validate.Calibration(0.0, 1.0, 1.0, 0.2)
    hosts = [0, 0, 2, 2, 1, 1, 3, 3]
    _, link_bytes = validate.simulate_point(SPEC, cal, "hierarchical", 1 << 20, hosts,
                                            _table(net, "dmodk"))
    up_leaf = [link for link in range(2 * net.n_cables)  # leaf (tier 1) -> spine (tier 2)
               if net.tier[net.link_u[link]] == 1 and net.tier[net.link_v[link]] == 2]
    assert len(up_leaf) == 4
    assert sum(link_bytes[link] > 0 for link in up_leaf) == 4


@pytest.mark.parametrize("argv", [["--collision-draws", "3"],
                                  ["--collision-draws", "99", "--calibration", "x.json"]])
def test_collision_draws_needs_a_calibration_and_a_sane_count(argv) -> None:
    """One calibration for everything: the draws never calibrate on their own."""
    from topology.emulate import cli

    with pytest.raises(UserError):
        cli.run(["validate", *argv])

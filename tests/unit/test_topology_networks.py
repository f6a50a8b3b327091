"""Builders, link failures, placement, spec parsing and reports: exact numbers on small networks."""

import json

import numpy as np
import pytest

from distnet.common.errors import UserError
from topology.builders import clos, custom, fat_tree, leaf_spine
from topology.network import cable_tier, fail_links, fail_random
from topology.placement import host_pods, place
from topology.report import (
    bisection_gbps,
    diameter_hops,
    info,
    info_text,
    max_flow_gbps,
    scaling_table,
    scaling_text,
)
from topology.spec import parse_network


def switches(net, tier):
    return int((net.tier == tier).sum())


@pytest.mark.parametrize("k, hosts, n_switches", [(4, 16, 20), (8, 128, 80), (48, 27_648, 2_880)])
def test_fat_tree_counts(k, hosts, n_switches):
    net = fat_tree(k)
    assert net.n_hosts == hosts == k**3 // 4
    assert int((net.tier > 0).sum()) == n_switches == 5 * k * k // 4
    assert (switches(net, 1), switches(net, 2), switches(net, 3)) == (k * k // 2, k * k // 2,
                                                                      k * k // 4)
    assert net.n_cables == 3 * k**3 // 4 and net.n_links == 2 * net.n_cables
    # every switch uses exactly k ports, every host one
    deg = np.bincount(net.link_u, minlength=net.n_nodes)
    assert np.all(deg[net.tier > 0] == k) and np.all(deg[net.hosts] == 1)


def test_fat_tree_structure_and_names():
    net = fat_tree(4)
    assert net.node_names[0] == ("host", 0, 0, 0) and net.node_names[15] == ("host", 3, 1, 1)
    assert net.cable(("host", 2, 1, 0), ("edge", 2, 1)) >= 0
    assert net.cable(("agg", 3, 1), ("core", 3)) >= 0
    with pytest.raises(UserError, match="no cable"):
        net.cable(("agg", 3, 1), ("core", 0))
    assert np.array_equal(net.link_u[0::2], net.link_v[1::2])  # cable c = links 2c, 2c+1


@pytest.mark.parametrize("k", [3, 0, 1, -2, 4.5])
def test_fat_tree_rejects_bad_k(k):
    with pytest.raises(UserError, match="even integer"):
        fat_tree(k)


def test_per_tier_speeds_and_latency():
    net = fat_tree(4, link_gbps=[100, 200, 400], link_latency_s=(1e-7, 2e-7, 3e-7), host_gbps=50)
    ct = cable_tier(net)
    assert set(net.link_gbps[0::2][ct == 1]) == {50.0}
    assert set(net.link_gbps[0::2][ct == 2]) == {200.0}
    assert set(net.link_latency_s[0::2][ct == 3]) == {3e-7}
    with pytest.raises(UserError, match="one per tier"):
        fat_tree(4, link_gbps=[100, 200])


def test_leaf_spine_counts_and_oversubscription():
    net = leaf_spine(8, 4, 16)
    assert net.n_hosts == 128 and switches(net, 1) == 8 and switches(net, 2) == 4
    assert net.n_cables == 128 + 32
    # default 1:1 realised by uplink speed: 16 * 400 / 4 = 1600 Gb/s per spine cable
    assert set(net.link_gbps[0::2][cable_tier(net) == 2]) == {1600.0}
    three = leaf_spine(8, 4, 16, oversub=3)
    assert info(three)["oversubscription"] == {"leaf": pytest.approx(3.0)}
    raw = leaf_spine(8, 4, 16, oversub=None)
    assert info(raw)["oversubscription"] == {"leaf": pytest.approx(4.0)}


def test_clos_counts_and_oversubscription():
    net = clos(4, 8, 16, 4, 8, tor_oversub=3)
    assert net.n_hosts == 512
    assert (switches(net, 1), switches(net, 2), switches(net, 3)) == (32, 16, 8)
    assert net.n_cables == 512 + 32 * 4 + 16 * 2
    over = info(net)["oversubscription"]
    assert over["tor"] == pytest.approx(3.0) and over["agg"] == pytest.approx(1.0)
    assert np.all(np.bincount(net.link_u)[net.tier == 3] == 4)  # one cable per pod per core
    with pytest.raises(UserError, match="multiple of aggs_per_pod"):
        clos(2, 2, 2, 3, 4)
    with pytest.raises(UserError, match="pods"):
        clos(0, 2, 2, 2, 2)


def test_custom_from_dict_and_json(tmp_path):
    spec = {
        "name": "tiny",
        "nodes": [{"name": "h0", "tier": 0}, {"name": "h1", "tier": 0}, {"name": "s", "tier": 1}],
        "cables": [["h0", "s"], {"a": "h1", "b": "s", "gbps": 100, "latency_s": 2e-6}],
    }
    path = tmp_path / "net.json"
    path.write_text(json.dumps(spec))
    for net in (custom(spec), custom(str(path)), parse_network(f"custom:{path}")):
        assert net.name == "tiny" and net.n_hosts == 2 and net.n_cables == 2
        assert net.link_gbps.tolist() == [400.0, 400.0, 100.0, 100.0]
        assert net.node("h1") == 1 and net.node_names[2] == ("switch", "s")


@pytest.mark.parametrize(
    "spec, match",
    [
        ({"nodes": {"a": 0}, "cables": [["a", "b"]]}, "unknown node 'b'"),
        ({"nodes": {"a": -1, "b": 1}, "cables": [["a", "b"]]}, "integer tier"),
        ({"nodes": {"a": 0, "b": 1}, "cables": []}, "empty"),
        ({"nodes": {"a": 0, "b": 1}, "cables": [["a"]]}, "a cable is"),
        ({"nodes": {"a": 0, "b": 1}, "cables": [["a", "a"]]}, "itself"),
        ({"nodes": {"a": 0, "b": 1}, "cables": [["a", "b"]], "colour": 1}, "unknown key"),
        ([1, 2], "JSON object"),
    ],
)
def test_custom_errors(spec, match):
    with pytest.raises(UserError, match=match):
        custom(spec)


def test_custom_bad_json_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{nodes: ")
    with pytest.raises(UserError, match="not valid JSON"):
        custom(str(bad))
    with pytest.raises(UserError, match="cannot read"):
        custom(str(tmp_path / "missing.json"))


def test_fail_links_by_index_and_names():
    net = fat_tree(4)
    c = net.cable(("edge", 0, 0), ("agg", 0, 1))
    a = fail_links(net, [c])
    b = fail_links(net, [(("agg", 0, 1), ("edge", 0, 0))])
    for f in (a, b):
        assert f.n_cables == 47 and f.n_hosts == 16
        pairs = set(zip(f.link_u.tolist(), f.link_v.tolist(), strict=True))
        u, v = net.node(("edge", 0, 0)), net.node(("agg", 0, 1))
        assert (u, v) not in pairs and (v, u) not in pairs
    with pytest.raises(UserError, match="out of range"):
        fail_links(net, [48])
    with pytest.raises(UserError, match="index or a pair"):
        fail_links(net, ["edge"])


def test_fail_random_is_seeded_and_respects_tier():
    net = fat_tree(8)
    a, b, c = (fail_random(net, 5, tier=3, seed=s) for s in (1, 1, 2))
    assert a.n_cables == net.n_cables - 5
    assert np.array_equal(a.link_u, b.link_u) and not np.array_equal(a.link_u, c.link_u)
    assert (cable_tier(a) == 3).sum() == (cable_tier(net) == 3).sum() - 5
    assert (cable_tier(fail_random(net, 4, seed=0)) == 1).sum() == 128  # hosts untouched
    with pytest.raises(UserError, match="cannot fail"):
        fail_random(net, 10_000, tier=2)


def test_placement_modes():
    net = fat_tree(4)
    assert place(net, 5).tolist() == [0, 1, 2, 3, 4]
    assert place(net, 6, "scattered").tolist() == [0, 4, 8, 12, 1, 5]
    assert sorted(place(net, 16, "scattered").tolist()) == list(range(16))
    r = place(net, 10, "random", seed=4)
    assert np.array_equal(r, place(net, 10, "random", seed=4)) and np.unique(r).size == 10
    assert not np.array_equal(r, place(net, 10, "random", seed=5))
    assert place(net, 3, "explicit", hosts=[7, 2, 9]).tolist() == [7, 2, 9]
    assert host_pods(net).tolist() == [p for p in range(4) for _ in range(4)]
    # leaf-spine pods are leaves; custom graphs group hosts by their switch
    assert place(leaf_spine(3, 2, 2), 4, "scattered").tolist() == [0, 2, 4, 1]
    tiny = custom({"nodes": {"a": 0, "b": 0, "c": 0, "s": 1, "t": 1},
                   "cables": [["a", "s"], ["b", "s"], ["c", "t"], ["s", "t"]]})
    assert place(tiny, 3, "scattered").tolist() == [0, 2, 1]


@pytest.mark.parametrize(
    "args, match",
    [
        ((17, "packed"), "do not fit"),
        ((0, "packed"), "at least one"),
        ((2, "spread"), "unknown placement"),
        ((2, "explicit"), "needs a host list"),
    ],
)
def test_placement_errors(args, match):
    with pytest.raises(UserError, match=match):
        place(fat_tree(4), *args)
    with pytest.raises(UserError, match="twice"):
        place(fat_tree(4), 2, "explicit", hosts=[3, 3])
    with pytest.raises(UserError, match="out of range"):
        place(fat_tree(4), 1, "explicit", hosts=[16])


def test_parse_network_kinds_and_overrides():
    net = parse_network("fat-tree:k=8")
    assert net.n_hosts == 128 and set(net.link_gbps) == {400.0}
    net = parse_network("clos:pods=4,tors=8,hosts=16,aggs=4,cores=8,oversub=3", link_gbps=100)
    assert net.n_hosts == 512 and info(net)["oversubscription"]["tor"] == pytest.approx(3.0)
    net = parse_network("leaf-spine:leaves=8,spines=4,hosts=16,link_latency_s=1e-6")
    assert net.n_hosts == 128 and set(net.link_latency_s) == {1e-6}
    net = parse_network("fat-tree:k=4,link_gbps=100", link_gbps=25, switch_latency_s=0.0)
    assert set(net.link_gbps) == {25.0} and net.switch_latency_s == 0.0


@pytest.mark.parametrize(
    "spec, match",
    [
        ("torus:k=4", "unknown network kind 'torus'"),
        ("fat-tree", "expected fat-tree:key=value"),
        ("fat-tree:k=four", "k='four' is not an integer"),
        ("fat-tree:k=5", "even integer"),
        ("fat-tree:k=4,radix=4", "unknown key 'radix'"),
        ("fat-tree:k=4,k=6", "k given twice"),
        ("fat-tree:k", "'k' is not key=value"),
        ("clos:pods=2,tors=2,hosts=2", "missing aggs, cores"),
        ("leaf-spine:leaves=2,spines=2,hosts=2,oversub=lots", "oversub='lots' is not a finite"),
        ("custom:", "give a JSON path"),
    ],
)
def test_parse_network_errors(spec, match):
    with pytest.raises(UserError, match=match):
        parse_network(spec)


def test_report_fat_tree_k4():
    net = fat_tree(4)
    d = info(net)
    assert d["hosts"] == 16 and d["switches_total"] == 20
    assert d["switches"] == {"edge": 8, "agg": 8, "core": 4}
    assert d["cables"] == 48 and d["links"] == 96
    assert d["bisection_gbps"] == 3200.0 and d["full_bisection_fraction"] == 1.0
    assert d["diameter_hops"] == 6 and d["equal_cost_paths"] == 4 and len(d["paths"]) == 4
    assert d["paths"][0][0] == ("host", 0, 0, 0) and d["paths"][0][-1] == ("host", 3, 1, 1)
    text = info_text(net)
    assert "3,200 Gb/s" in text and "4 equal-cost paths" in text


@pytest.mark.parametrize(
    "net",
    [fat_tree(4), fat_tree(6), leaf_spine(4, 3, 4, oversub=2), clos(4, 2, 3, 2, 4, tor_oversub=3),
     clos(2, 2, 4, 2, 2, agg_oversub=4)],
    ids=["ft4", "ft6", "ls", "clos-tor3", "clos-agg4"],
)
def test_tier_cut_bisection_equals_max_flow(net):
    half = net.n_hosts // 2
    exact = max_flow_gbps(net, np.arange(half), np.arange(half, net.n_hosts))
    assert bisection_gbps(net)[0] == pytest.approx(exact)


def test_bisection_numbers():
    assert bisection_gbps(fat_tree(48))[0] == 27_648 / 2 * 400
    assert info(clos(4, 8, 16, 4, 8, tor_oversub=3))["full_bisection_fraction"] == pytest.approx(
        1 / 3)
    # failures shrink it: two of the four core links out of pods 0-1 on agg plane 0
    failed = fail_links(fat_tree(4), [(("agg", 0, 0), ("core", 0)), (("agg", 1, 0), ("core", 1))])
    assert bisection_gbps(failed)[0] == 2400.0
    ring = custom({"nodes": {"a": 0, "b": 0, "s": 1, "t": 1},
                   "cables": [["a", "s"], ["b", "t"], ["s", "t"], ["s", "t", {"gbps": 100}]]})
    assert bisection_gbps(ring) == (400.0, "max-flow between host halves")


def test_diameter():
    assert diameter_hops(fat_tree(48)) == 6
    assert diameter_hops(leaf_spine(4, 2, 2)) == 4
    assert diameter_hops(leaf_spine(1, 2, 3)) == 2
    cut = fail_links(fat_tree(4), [(("host", 0, 0, 0), ("edge", 0, 0))])
    assert diameter_hops(cut) is None


def test_scaling_table():
    rows = {r["radix"]: r for r in scaling_table()}
    assert rows[48] == {"radix": 48, "leaf_spine_hosts": 1152, "leaf_spine_switches": 72,
                        "fat_tree_hosts": 27_648, "fat_tree_switches": 2_880}
    assert rows[128]["fat_tree_hosts"] == 524_288
    assert "27,648" in scaling_text(scaling_table())
    with pytest.raises(UserError):
        scaling_table((5,))

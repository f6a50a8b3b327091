"""Routing: path shapes and lengths, ECMP determinism, ideal conservation, D-mod-k, failures."""

import numpy as np
import pytest

from distnet.common.errors import UserError
from topology.builders import clos, custom, fat_tree, leaf_spine
from topology.network import Network, fail_links
from topology.report import equal_cost_paths
from topology.routing import MODES, Routes, route

US = 1e-6


def all_pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    s, d = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    return s.ravel(), d.ravel()


def check_paths(net: Network, r: Routes, src: np.ndarray, dst: np.ndarray) -> None:
    """Every single-path route is a contiguous walk from the source host to the destination."""
    for f in range(r.n_flows):
        links = r.links_of(f)
        assert links.size == r.hops[f]
        if src[f] == dst[f]:
            assert links.size == 0 and r.latency_s[f] == 0.0
            continue
        assert net.link_u[links[0]] == net.hosts[src[f]]
        assert net.link_v[links[-1]] == net.hosts[dst[f]]
        assert np.array_equal(net.link_v[links[:-1]], net.link_u[links[1:]])


def check_conservation(net: Network, r: Routes, src: np.ndarray, dst: np.ndarray) -> None:
    """Ideal fractions: 1 leaves the source, 1 reaches the destination, switches conserve."""
    for f in range(r.n_flows):
        if src[f] == dst[f]:
            continue
        links, frac = r.links_of(f), r.fracs_of(f)
        net_out = np.zeros(net.n_nodes)
        np.add.at(net_out, net.link_u[links], frac)
        np.add.at(net_out, net.link_v[links], -frac)
        expect = np.zeros(net.n_nodes)
        expect[net.hosts[src[f]]], expect[net.hosts[dst[f]]] = 1.0, -1.0
        np.testing.assert_allclose(net_out, expect, atol=1e-12)


def fat_tree_hops(k: int, s: np.ndarray, d: np.ndarray) -> np.ndarray:
    h = k // 2
    same_edge, same_pod = s // h == d // h, s // (h * h) == d // (h * h)
    return np.where(s == d, 0, np.where(same_edge, 2, np.where(same_pod, 4, 6)))


@pytest.mark.parametrize("mode", MODES)
def test_fat_tree_k4_every_pair_reaches_with_expected_hops(mode):
    net = fat_tree(4)
    s, d = all_pairs(16)
    r = route(net, s, d, mode=mode, seed=3)
    np.testing.assert_array_equal(r.hops, fat_tree_hops(4, s, d))
    if mode == "ideal":
        check_conservation(net, r, s, d)
    else:
        check_paths(net, r, s, d)
        assert np.all(r.frac == 1.0)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "net, far_hops",
    [(leaf_spine(3, 2, 3), 4), (clos(3, 2, 2, 2, 4, tor_oversub=2), 6)],
    ids=["leaf-spine", "clos"],
)
def test_leaf_spine_and_clos_every_pair_reaches(net, far_hops, mode):
    s, d = all_pairs(net.n_hosts)
    r = route(net, s, d, mode=mode)
    assert r.hops.max() == far_hops and set(np.unique(r.hops)) <= {0, 2, 4, 6}
    if mode == "ideal":
        check_conservation(net, r, s, d)
    else:
        check_paths(net, r, s, d)


def test_latency_is_links_plus_switches():
    r = route(fat_tree(4), np.array([0, 0, 0, 0]), np.array([0, 1, 2, 15]))
    np.testing.assert_allclose(r.latency_s, [0.0, 2 * 0.5 * US + 0.6 * US, 4 * 0.5 * US + 1.8 * US,
                                             6 * 0.5 * US + 3.0 * US])


def test_equal_cost_path_counts():
    net4, net6 = fat_tree(4), fat_tree(6)
    assert equal_cost_paths(net4, 0, 1)[0] == 1  # same edge
    assert equal_cost_paths(net4, 0, 2)[0] == 2  # same pod: k/2 aggs
    assert equal_cost_paths(net4, 0, 15)[0] == 4  # across pods: (k/2)^2 cores
    assert equal_cost_paths(net6, 0, 53)[0] == 9
    assert equal_cost_paths(leaf_spine(2, 5, 1), 0, 1)[0] == 5


def test_ideal_fractions_on_fat_tree_tiers():
    net = fat_tree(4)
    r = route(net, np.array([0]), np.array([15]), mode="ideal")
    frac = r.fracs_of(0)
    tiers = np.maximum(net.tier[net.link_u[r.links_of(0)]], net.tier[net.link_v[r.links_of(0)]])
    up = net.tier[net.link_v[r.links_of(0)]] > net.tier[net.link_u[r.links_of(0)]]
    # host link 1, edge->agg 1/2 each, agg->core 1/4 each, then back down symmetrically
    np.testing.assert_allclose(frac[(tiers == 1)], 1.0)
    np.testing.assert_allclose(frac[(tiers == 2)], 0.5)
    np.testing.assert_allclose(frac[(tiers == 3)], 0.25)
    assert (up & (tiers == 3)).sum() == 4 and (~up & (tiers == 3)).sum() == 4


def test_ideal_latency_is_the_slowest_equal_cost_path():
    net = custom({
        "switch_latency_s": 0.0,
        "nodes": {"a": 0, "b": 0, "ea": 1, "eb": 1, "fast": 2, "slow": 2},
        "cables": [["a", "ea"], ["b", "eb"], ["ea", "fast"], ["eb", "fast"],
                   ["ea", "slow", {"latency_s": 5e-6}], ["eb", "slow"]],
    }, link_latency_s=1e-6)
    r = route(net, np.array([0]), np.array([1]), mode="ideal")
    assert r.latency_s[0] == pytest.approx(3e-6 + 5e-6)
    assert r.hops[0] == 4 and r.fracs_of(0).sum() == pytest.approx(1 + 0.5 * 4 + 1)


def test_ecmp_is_deterministic_per_flow_and_seed_sensitive():
    net = fat_tree(8)
    s, d = all_pairs(net.n_hosts)
    a = route(net, s, d, mode="ecmp", seed=1)
    b = route(net, s, d, mode="ecmp", seed=1)
    c = route(net, s, d, mode="ecmp", seed=2)
    assert np.array_equal(a.link, b.link)
    assert not np.array_equal(a.link, c.link)
    # a flow's path depends on (src, dst, seed), not on its position in the batch
    one = route(net, np.array([5]), np.array([100]), mode="ecmp", seed=1)
    f = 5 * net.n_hosts + 100
    assert np.array_equal(one.links_of(0), a.links_of(f))
    # a different salt may take another path for the same host pair
    salted = route(net, np.full(64, 5), np.full(64, 100), seed=1, salt=np.arange(64))
    cores = {int(x) for x in net.link_v[salted.link] if net.tier[x] == 3}
    assert len(cores) > 8


def test_ecmp_spreads_over_every_core():
    net = fat_tree(4)
    s, d = all_pairs(16)
    r = route(net, s, d, mode="ecmp", seed=0)
    used = set(net.link_v[r.link].tolist())
    assert {net.node(("core", c)) for c in range(4)} <= used


def test_dmodk_picks_uplinks_from_destination_digits():
    k, h = 8, 4
    net = fat_tree(k)
    dst = np.arange(net.n_hosts)
    src = (dst + net.n_hosts // 2) % net.n_hosts  # every flow crosses pods
    r = route(net, src, dst, mode="dmodk")
    for f in range(r.n_flows):
        path = net.link_v[r.links_of(f)]
        d = int(dst[f])
        assert net.node_names[path[1]] == ("agg", int(src[f]) // (h * h), d % h)
        assert net.node_names[path[2]] == ("core", (d % h) * h + (d // h) % h)
    # so all traffic to one destination meets at one core: D-mod-k's defining property
    r2 = route(net, np.arange(16, 128), np.zeros(112, dtype=np.int64), mode="dmodk")
    cores = {int(x) for x in net.link_v[r2.link] if net.tier[x] == 3}
    assert cores == {net.node(("core", 0))}


def test_failed_links_are_avoided_and_fractions_still_conserve():
    net = fat_tree(4)
    dead = [(("agg", 0, 0), ("core", 0)), (("edge", 3, 1), ("agg", 3, 1)),
            (("edge", 1, 0), ("agg", 1, 0))]
    failed = fail_links(net, dead)
    assert failed.n_cables == net.n_cables - 3
    s, d = all_pairs(16)
    for mode in MODES:
        r = route(failed, s, d, mode=mode, seed=7)
        names = {failed.link_name(int(x)) for x in r.link}
        assert not any("('core', 0)" in n and "('agg', 0, 0)" in n for n in names)
        if mode == "ideal":
            check_conservation(failed, r, s, d)
        else:
            check_paths(failed, r, s, d)
    # edge (3,1) kept only agg (3,0), reached from cores 0 and 1; agg (0,0) lost core 0
    assert equal_cost_paths(failed, 0, 15)[0] == 1
    r = route(failed, np.array([0]), np.array([15]), mode="ideal")
    assert r.hops[0] == 6
    # edge (1,0) reaches only agg (1,1), whose cores lead to agg (3,1), which lost edge (3,1):
    # no up-down path is left, so the flow dips through edge (3,0) and back up (8 links)
    r = route(failed, np.array([4]), np.array([15]), mode="ecmp")
    via = [failed.node_names[x] for x in failed.link_v[r.links_of(0)]]
    assert r.hops[0] == 8 and ("edge", 3, 0) in via and ("agg", 3, 0) in via


def test_failure_that_disconnects_is_a_user_error():
    net = fat_tree(4)
    cut = fail_links(net, [(("edge", 0, 0), ("agg", 0, 0)), (("edge", 0, 0), ("agg", 0, 1))])
    assert route(cut, np.array([0]), np.array([1])).hops[0] == 2  # same edge still fine
    with pytest.raises(UserError, match="disconnected"):
        route(cut, np.array([0]), np.array([2]))
    lone = fail_links(net, [(("host", 0, 0, 0), ("edge", 0, 0))])
    with pytest.raises(UserError, match=r"\('host', 0, 0, 0\)"):
        route(lone, np.array([3]), np.array([0]), mode="ideal")


def test_custom_non_tree_uses_bfs_shortest_paths():
    # four switches in a ring, hosts on opposite corners: two equal 4-link paths
    net = custom({
        "nodes": {"a": 0, "b": 0, "s0": 1, "s1": 1, "s2": 1, "s3": 1},
        "cables": [["a", "s0"], ["b", "s2"], ["s0", "s1"], ["s1", "s2"], ["s2", "s3"],
                   ["s3", "s0"]],
    })
    r = route(net, np.array([0]), np.array([1]), mode="ideal")
    assert r.hops[0] == 4
    assert sorted(r.fracs_of(0).tolist()) == [0.5] * 4 + [1.0] * 2
    assert equal_cost_paths(net, 0, 1)[0] == 2
    broken = fail_links(net, [("s0", "s1"), ("s3", "s0")])
    with pytest.raises(UserError, match="disconnected"):
        route(broken, np.array([0]), np.array([1]))


def test_ring_step_on_k48_has_exact_hop_counts():
    net = fat_tree(48)
    n = net.n_hosts
    r = route(net, np.arange(n), (np.arange(n) + 1) % n, mode="ecmp")
    # 1,152 edge boundaries, 48 of them also pod boundaries
    assert (r.hops == 6).sum() == 48
    assert (r.hops == 4).sum() == 1152 - 48
    assert (r.hops == 2).sum() == n - 1152
    assert r.flow_ptr[-1] == 2 * (n - 1152) + 4 * (1152 - 48) + 6 * 48


def test_routes_are_cached_and_read_only():
    net = fat_tree(4)
    a = route(net, np.arange(16), np.arange(16)[::-1])
    assert route(net, np.arange(16), np.arange(16)[::-1]) is a
    with pytest.raises(ValueError):
        a.link[0] = 0


def test_bad_arguments():
    net = fat_tree(4)
    with pytest.raises(UserError, match="unknown routing mode"):
        route(net, np.array([0]), np.array([1]), mode="spray")
    with pytest.raises(UserError, match="out of range"):
        route(net, np.array([0]), np.array([16]))
    with pytest.raises(UserError, match="destinations"):
        route(net, np.array([0, 1]), np.array([1]))


def test_ideal_refuses_instead_of_exhausting_memory(monkeypatch):
    import topology.routing as routing

    monkeypatch.setattr(routing, "_MAX_CANDIDATES", 100)
    net = fat_tree(8)
    with pytest.raises(UserError, match="ecmp/dmodk or fewer flows"):
        route(net, np.arange(64), np.arange(64, 128), mode="ideal")


def test_custom_tree_with_several_ways_down():
    # the core reaches eb through both x and y: descent has a real choice there
    net = custom({
        "nodes": {"a": 0, "b": 0, "ea": 1, "eb": 1, "w": 2, "x": 2, "y": 2, "z": 3},
        "cables": [["a", "ea"], ["b", "eb"], ["ea", "w"], ["w", "z"], ["z", "x"], ["z", "y"],
                   ["x", "eb"], ["y", "eb"]],
    })
    s, d = np.array([0, 1]), np.array([1, 0])
    r = route(net, s, d, mode="ideal")
    assert r.hops.tolist() == [6, 6]
    check_conservation(net, r, s, d)
    assert equal_cost_paths(net, 0, 1)[0] == 2
    seen = {tuple(route(net, s[:1], d[:1], mode="ecmp", seed=x).links_of(0)) for x in range(16)}
    assert len(seen) == 2

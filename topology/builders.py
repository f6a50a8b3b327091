"""Network builders: fat_tree, clos, leaf_spine, custom. Each returns a plain `Network`.

Hosts always come first (host h is node h), then switches tier by tier, so node indices follow
the structure and everything is built with vectorised index arithmetic: a k=48 fat-tree (27,648
hosts, 2,880 switches, 82,944 cables) takes a few tens of milliseconds, mostly the name list.

Per-tier parameters: `link_gbps` / `link_latency_s` accept one number for every tier or a
sequence, one value per cable tier from the bottom (host-edge, edge-agg, agg-core);
`host_gbps` overrides the host NIC tier only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from distnet.common.errors import UserError
from distnet.common.jsonfile import finite
from distnet.common.memory import check_fits
from topology.network import (
    DEFAULT_LINK_GBPS,
    DEFAULT_LINK_LATENCY_S,
    DEFAULT_SWITCH_LATENCY_S,
    Network,
    make_network,
)

PerTier = float | Sequence[float]
__all__ = ["clos", "custom", "fat_tree", "leaf_spine", "per_tier"]


def per_tier(value: PerTier, n_tiers: int, what: str) -> list[float]:
    """One value per cable tier from a scalar or a sequence of exactly n_tiers values."""
    if isinstance(value, (int, float, np.integer, np.floating)):
        return [float(value)] * n_tiers
    vals = [float(v) for v in value]
    if len(vals) != n_tiers:
        raise UserError(f"{what}: expected 1 or {n_tiers} values (one per tier), got {len(vals)}")
    return vals


def _tiers(link_gbps: PerTier, link_latency_s: PerTier, host_gbps: float | None, n: int):
    gbps = per_tier(link_gbps, n, "link_gbps")
    lat = per_tier(link_latency_s, n, "link_latency_s")
    if host_gbps is not None:
        gbps[0] = float(host_gbps)
    return gbps, lat


def _positive_int(name: str, value: int, minimum: int = 1) -> int:
    if int(value) != value or value < minimum:
        raise UserError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


# Bytes per node (its Python name tuple, tier, routing tables) and per cable (two directed
# links with endpoints, speed, latency, CSR entries and flow state): measured on fat-tree k=32
# with a wide margin, enough to refuse a spec that cannot fit before its arrays are allocated.
BYTES_PER_NODE = 400
BYTES_PER_CABLE = 400


def _check_size(name: str, n_nodes: int, n_cables: int) -> None:
    check_fits(f"{name} ({n_nodes:,} nodes, {n_cables:,} cables)",
               BYTES_PER_NODE * n_nodes + BYTES_PER_CABLE * n_cables)


def _tiered_network(
    name: str,
    names: list[tuple],
    nodes_per_tier: list[int],
    cable_u: np.ndarray,
    cable_v: np.ndarray,
    cables_per_tier: list[int],
    gbps: list[float],
    lat: list[float],
    switch_latency_s: float,
) -> Network:
    """make_network for a built-in: nodes come tier by tier from 0 (nodes_per_tier of each), and
    cables tier by tier from the bottom, each cable tier at its own gbps[i] / lat[i]."""
    tier = np.repeat(np.arange(len(nodes_per_tier), dtype=np.int64), nodes_per_tier)
    return make_network(
        name, names, tier, cable_u, cable_v, np.repeat(gbps, cables_per_tier),
        np.repeat(lat, cables_per_tier), switch_latency_s,
    )


def fat_tree(
    k: int,
    link_gbps: PerTier = DEFAULT_LINK_GBPS,
    link_latency_s: PerTier = DEFAULT_LINK_LATENCY_S,
    switch_latency_s: float = DEFAULT_SWITCH_LATENCY_S,
    host_gbps: float | None = None,
) -> Network:
    """Al-Fares et al. (SIGCOMM 2008) k-ary fat-tree of k-port switches.

    k pods of k/2 edge + k/2 aggregation switches, (k/2)^2 cores, k^3/4 hosts, 5k^2/4 switches.
    Edge switch e of pod p serves hosts (p, e, 0..k/2-1) and connects to every agg of its pod;
    agg a of every pod connects to cores a*k/2 .. a*k/2 + k/2 - 1 (core group a).
    """
    if int(k) != k or k < 2 or k % 2:
        raise UserError(f"fat_tree: k must be an even integer >= 2, got {k!r}")
    k = int(k)
    h = k // 2
    n_hosts, n_edge, n_core = k * h * h, k * h, h * h
    _check_size(f"fat_tree k={k}", n_hosts + 2 * n_edge + n_core, n_hosts + 2 * n_edge * h)
    edge0, agg0 = n_hosts, n_hosts + n_edge
    core0 = agg0 + n_edge
    gbps, lat = _tiers(link_gbps, link_latency_s, host_gbps, 3)

    hidx = np.arange(n_hosts, dtype=np.int64)
    host_edge = edge0 + hidx // h  # hosts of edge (p, e) are consecutive
    # edge (p, e) -> agg (p, a) for all a: pod-local complete bipartite graph
    e_all = np.repeat(np.arange(n_edge, dtype=np.int64), h)
    a_all = (e_all // h) * h + np.tile(np.arange(h, dtype=np.int64), n_edge)
    # agg (p, a) -> core a*h + m
    g_all = np.repeat(np.arange(n_edge, dtype=np.int64), h)
    c_all = (g_all % h) * h + np.tile(np.arange(h, dtype=np.int64), n_edge)

    cable_u = np.concatenate([hidx, edge0 + e_all, agg0 + g_all])
    cable_v = np.concatenate([host_edge, agg0 + a_all, core0 + c_all])

    names: list[tuple] = [("host", p, e, i) for p in range(k) for e in range(h) for i in range(h)]
    names += [("edge", p, e) for p in range(k) for e in range(h)]
    names += [("agg", p, a) for p in range(k) for a in range(h)]
    names += [("core", c) for c in range(n_core)]
    return _tiered_network(
        f"fat-tree-k{k}", names, [n_hosts, n_edge, n_edge, n_core], cable_u, cable_v,
        [n_hosts, n_edge * h, n_edge * h], gbps, lat, switch_latency_s,
    )


def _uplink_gbps(down_gbps_total: float, n_up: int, oversub: float | None, fallback: float):
    """Per-uplink speed giving downlink/uplink capacity = oversub (None keeps `fallback`)."""
    if oversub is None:
        return fallback
    if not 0 < oversub < float("inf"):
        raise UserError(f"oversubscription must be > 0, got {oversub}")
    return down_gbps_total / (oversub * n_up)


def leaf_spine(
    leaves: int,
    spines: int,
    hosts_per_leaf: int,
    link_gbps: PerTier = DEFAULT_LINK_GBPS,
    link_latency_s: PerTier = DEFAULT_LINK_LATENCY_S,
    switch_latency_s: float = DEFAULT_SWITCH_LATENCY_S,
    host_gbps: float | None = None,
    oversub: float | None = 1.0,
) -> Network:
    """2-tier folded Clos: every leaf has one cable to every spine.

    Cable tiers: (host-leaf, leaf-spine). `oversub` (leaf downlink / uplink capacity) is realised
    by uplink *speed*: each leaf-spine cable runs at hosts_per_leaf * host_gbps / (oversub *
    spines), so any ratio is exact without changing the wiring. The default 1.0 is non-blocking;
    oversub=None keeps link_gbps for the uplinks instead.
    """
    leaves = _positive_int("leaf_spine: leaves", leaves)
    spines = _positive_int("leaf_spine: spines", spines)
    hpl = _positive_int("leaf_spine: hosts_per_leaf", hosts_per_leaf)
    n_hosts = leaves * hpl
    _check_size(f"leaf_spine {leaves}x{spines}x{hpl}", n_hosts + leaves + spines,
                n_hosts + leaves * spines)
    gbps, lat = _tiers(link_gbps, link_latency_s, host_gbps, 2)
    gbps[1] = _uplink_gbps(hpl * gbps[0], spines, oversub, gbps[1])
    leaf0, spine0 = n_hosts, n_hosts + leaves
    hidx = np.arange(n_hosts, dtype=np.int64)
    l_all = np.repeat(np.arange(leaves, dtype=np.int64), spines)
    s_all = np.tile(np.arange(spines, dtype=np.int64), leaves)
    cable_u = np.concatenate([hidx, leaf0 + l_all])
    cable_v = np.concatenate([leaf0 + hidx // hpl, spine0 + s_all])
    names: list[tuple] = [("host", leaf, i) for leaf in range(leaves) for i in range(hpl)]
    names += [("leaf", i) for i in range(leaves)] + [("spine", i) for i in range(spines)]
    return _tiered_network(
        f"leaf-spine-{leaves}x{spines}x{hpl}", names, [n_hosts, leaves, spines], cable_u, cable_v,
        [n_hosts, leaves * spines], gbps, lat, switch_latency_s,
    )


def clos(
    pods: int,
    tors_per_pod: int,
    hosts_per_tor: int,
    aggs_per_pod: int,
    cores: int,
    tor_oversub: float | None = 1.0,
    agg_oversub: float | None = 1.0,
    link_gbps: PerTier = DEFAULT_LINK_GBPS,
    link_latency_s: PerTier = DEFAULT_LINK_LATENCY_S,
    switch_latency_s: float = DEFAULT_SWITCH_LATENCY_S,
    host_gbps: float | None = None,
) -> Network:
    """3-tier Clos: ToRs, per-pod aggregation, a shared core.

    Every ToR has one cable to every agg of its pod; agg a of every pod has one cable to each
    core c with c mod aggs_per_pod == a (cores split into aggs_per_pod planes, as in a
    fat-tree), so each core has one cable per pod and cores must be a multiple of aggs_per_pod.
    Cable tiers: (host-ToR, ToR-agg, agg-core). Oversubscription (downlink / uplink capacity of
    a switch) is realised by uplink *speed*, which keeps the wiring and makes any ratio exact:
    ToR uplinks run at hosts_per_tor * host_gbps / (tor_oversub * aggs_per_pod), agg uplinks
    at tors_per_pod * tor_uplink_gbps / (agg_oversub * cores / aggs_per_pod). The defaults
    (1.0) make the fabric non-blocking; None keeps the per-tier link_gbps for that tier.
    """
    pods = _positive_int("clos: pods", pods)
    tpp = _positive_int("clos: tors_per_pod", tors_per_pod)
    hpt = _positive_int("clos: hosts_per_tor", hosts_per_tor)
    app = _positive_int("clos: aggs_per_pod", aggs_per_pod)
    cores = _positive_int("clos: cores", cores)
    if cores % app:
        raise UserError(f"clos: cores ({cores}) must be a multiple of aggs_per_pod ({app})")
    cpa = cores // app  # core uplinks per agg
    n_tors = pods * tpp
    _check_size(f"clos {pods}x{tpp}x{hpt}", n_tors * hpt + n_tors + pods * app + cores,
                n_tors * hpt + n_tors * app + pods * app * cpa)
    gbps, lat = _tiers(link_gbps, link_latency_s, host_gbps, 3)
    gbps[1] = _uplink_gbps(hpt * gbps[0], app, tor_oversub, gbps[1])
    gbps[2] = _uplink_gbps(tpp * gbps[1], cpa, agg_oversub, gbps[2])
    n_hosts, n_tor, n_agg = pods * tpp * hpt, pods * tpp, pods * app
    tor0, agg0 = n_hosts, n_hosts + n_tor
    core0 = agg0 + n_agg
    hidx = np.arange(n_hosts, dtype=np.int64)
    t_all = np.repeat(np.arange(n_tor, dtype=np.int64), app)
    a_all = (t_all // tpp) * app + np.tile(np.arange(app, dtype=np.int64), n_tor)
    g_all = np.repeat(np.arange(n_agg, dtype=np.int64), cpa)
    c_all = (g_all % app) + app * np.tile(np.arange(cpa, dtype=np.int64), n_agg)
    cable_u = np.concatenate([hidx, tor0 + t_all, agg0 + g_all])
    cable_v = np.concatenate([tor0 + hidx // hpt, agg0 + a_all, core0 + c_all])
    names: list[tuple] = [
        ("host", p, t, i) for p in range(pods) for t in range(tpp) for i in range(hpt)
    ]
    names += [("tor", p, t) for p in range(pods) for t in range(tpp)]
    names += [("agg", p, a) for p in range(pods) for a in range(app)]
    names += [("core", c) for c in range(cores)]
    return _tiered_network(
        f"clos-{pods}x{tpp}x{hpt}-a{app}-c{cores}", names, [n_hosts, n_tor, n_agg, cores],
        cable_u, cable_v, [n_hosts, n_tor * app, n_agg * cpa], gbps, lat, switch_latency_s,
    )


def custom(
    spec: dict | str,
    link_gbps: float = DEFAULT_LINK_GBPS,
    link_latency_s: float = DEFAULT_LINK_LATENCY_S,
    switch_latency_s: float | None = None,
) -> Network:
    """A small hand-written network from a dict or a JSON file path:

        {"name": "two-racks", "switch_latency_s": 6e-7,
         "nodes": {"h0": 0, "h1": 0, "tor0": 1, "tor1": 1, "spine": 2},   # name -> tier
         "cables": [["h0", "tor0"], ["h1", "tor1"],
                    ["tor0", "spine", {"gbps": 100}], ["tor1", "spine", {"latency_s": 1e-6}]]}

    Tier 0 nodes are hosts (numbered in the order given), everything else is a switch; cables
    default to link_gbps / link_latency_s. Node names become ("host", name) / ("switch", name).
    Layered trees route up-down like the built-ins; any other graph uses BFS shortest paths.
    """
    loaded = _load_json(spec) if isinstance(spec, str) else spec
    if not isinstance(loaded, dict):
        raise UserError("custom network: expected a JSON object with 'nodes' and 'cables'")
    spec = loaded
    unknown = set(spec) - {"name", "nodes", "cables", "switch_latency_s"}
    if unknown:
        raise UserError(f"custom network: unknown key(s) {sorted(unknown)}")
    nodes = spec.get("nodes")
    if isinstance(nodes, list):  # [{"name": ..., "tier": ...}, ...]
        try:
            nodes = {str(n["name"]): n["tier"] for n in nodes}
        except (KeyError, TypeError):
            raise UserError("custom network: each node needs 'name' and 'tier'") from None
    if not isinstance(nodes, dict) or not nodes:
        raise UserError("custom network: 'nodes' must map node name -> tier")
    index = {name: i for i, name in enumerate(nodes)}
    tiers = [_tier_value(name, t) for name, t in nodes.items()]
    cu, cv, gb, la = [], [], [], []
    for c in spec.get("cables") or []:
        a, b, opts = _cable_fields(c)
        for end in (a, b):
            if end not in index:
                raise UserError(f"custom network: cable names unknown node {end!r}")
        cu.append(index[a])
        cv.append(index[b])
        gb.append(finite(opts.get("gbps", link_gbps), f"custom network: cable {a}-{b} gbps",
                         lo=1e-9, hi=1e9))
        la.append(finite(opts.get("latency_s", link_latency_s),
                         f"custom network: cable {a}-{b} latency_s", lo=0.0, hi=1.0))
    if not cu:
        raise UserError("custom network: 'cables' is empty")
    sw = finite(spec.get("switch_latency_s", DEFAULT_SWITCH_LATENCY_S),
                "custom network: switch_latency_s", lo=0.0, hi=1.0)
    if switch_latency_s is not None:
        sw = switch_latency_s
    names = [("host" if t == 0 else "switch", n) for n, t in zip(nodes, tiers, strict=True)]
    return make_network(
        str(spec.get("name", "custom")), names, np.array(tiers), np.array(cu), np.array(cv),
        np.array(gb), np.array(la), float(sw),
    )


def _load_json(path: str) -> object:
    from distnet.common.jsonfile import read_json

    return read_json(path, f"custom network {path}")


def _tier_value(name: str, t: object) -> int:
    if not isinstance(t, int) or isinstance(t, bool) or t < 0:
        raise UserError(f"custom network: node {name!r} needs an integer tier >= 0, got {t!r}")
    return t


def _cable_fields(c: object) -> tuple[str, str, dict]:
    if isinstance(c, dict) and "a" in c and "b" in c:
        return str(c["a"]), str(c["b"]), c
    if isinstance(c, (list, tuple)) and len(c) in (2, 3):
        opts = c[2] if len(c) == 3 else {}
        if isinstance(opts, dict):
            return str(c[0]), str(c[1]), opts
    raise UserError(f"custom network: a cable is [a, b] or [a, b, {{gbps, latency_s}}], got {c!r}")

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

from distnet.errors import UserError
from topology.network import (
    DEFAULT_LINK_GBPS,
    DEFAULT_LINK_LATENCY_S,
    DEFAULT_SWITCH_LATENCY_S,
    Network,
    make_network,
)

PerTier = float | Sequence[float]


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
    counts = [n_hosts, n_edge * h, n_edge * h]
    cable_gbps = np.repeat(gbps, counts)
    cable_lat = np.repeat(lat, counts)

    names: list[tuple] = [("host", p, e, i) for p in range(k) for e in range(h) for i in range(h)]
    names += [("edge", p, e) for p in range(k) for e in range(h)]
    names += [("agg", p, a) for p in range(k) for a in range(h)]
    names += [("core", c) for c in range(n_core)]
    tier = np.repeat(np.arange(4, dtype=np.int64), [n_hosts, n_edge, n_edge, n_core])
    return make_network(
        f"fat-tree-k{k}", names, tier, cable_u, cable_v, cable_gbps, cable_lat, switch_latency_s
    )

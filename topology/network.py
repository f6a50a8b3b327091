"""A network as plain arrays: nodes with tiers, directed links with capacity and latency.

Links come in pairs: cable c is directed link 2c (u -> v) and 2c + 1 (v -> u), so failing a cable
removes both directions and `cable_of_link = link // 2`. Every builder goes through
`make_network`, which keeps that layout.

Defaults (one line of why each):
- 400 Gb/s links and host NICs: a current AI/HPC host NIC (400GbE / NDR InfiniBand) on
  matching switch ports.
- 0.5 us per link: about 100 m of fibre at 5 ns/m plus PAM4 FEC, a datacentre-scale cable run.
- 0.6 us per switch: port-to-port latency of a cut-through 400G switch ASIC
  (Tomahawk/Spectrum class, 0.3-0.8 us).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from distnet.common.errors import UserError

DEFAULT_LINK_GBPS = 400.0
DEFAULT_LINK_LATENCY_S = 0.5e-6
DEFAULT_SWITCH_LATENCY_S = 0.6e-6

TIER_NAMES = {0: "host", 1: "edge/ToR/leaf", 2: "agg/spine", 3: "core"}


@dataclass(frozen=True, eq=False)
class Network:
    """Nodes 0..N-1 (names and tiers) and directed links (u, v, Gb/s, latency).

    Equality is identity (arrays do not compare as booleans), which also makes a Network usable
    as a cache key; derived tables are cached properties computed once on first use.
    """

    name: str
    node_names: list[tuple]  # index -> readable id, e.g. ("edge", pod, i)
    tier: np.ndarray  # int64 per node: 0 host, 1 edge/ToR/leaf, 2 agg/spine, 3 core
    hosts: np.ndarray  # int64 node index of host h
    link_u: np.ndarray  # int64 directed link source node
    link_v: np.ndarray  # int64 directed link destination node
    link_gbps: np.ndarray  # float64 capacity of each directed link
    link_latency_s: np.ndarray  # float64 propagation latency of each directed link
    switch_latency_s: float  # added per switch a packet crosses

    @property
    def n_nodes(self) -> int:
        return len(self.node_names)

    @property
    def n_hosts(self) -> int:
        return int(self.hosts.shape[0])

    @property
    def n_links(self) -> int:
        return int(self.link_u.shape[0])

    @property
    def n_cables(self) -> int:
        return self.n_links // 2

    @cached_property
    def node_index(self) -> dict[tuple, int]:
        return {name: i for i, name in enumerate(self.node_names)}

    @cached_property
    def host_of_node(self) -> np.ndarray:
        """node -> host number, -1 for switches."""
        out = np.full(self.n_nodes, -1, dtype=np.int64)
        out[self.hosts] = np.arange(self.n_hosts, dtype=np.int64)
        return out

    @cached_property
    def out_csr(self) -> tuple[np.ndarray, np.ndarray]:
        """(ptr, links): the out-links of node u are links[ptr[u]:ptr[u+1]], sorted by v.

        Sorting by the far end gives every node a fixed port order, which D-mod-k relies on.
        """
        order = np.lexsort((self.link_v, self.link_u)).astype(np.int64)
        ptr = np.zeros(self.n_nodes + 1, dtype=np.int64)
        np.cumsum(np.bincount(self.link_u, minlength=self.n_nodes), out=ptr[1:])
        return ptr, order

    def node(self, name: tuple | str) -> int:
        """Index of the node called `name`; a bare string finds a custom network's
        ("host", s) or ("switch", s). Unknown names are a UserError."""
        keys = [("host", name), ("switch", name), (name,)] if isinstance(name, str) else [name]
        for key in keys:
            hit = self.node_index.get(tuple(key))
            if hit is not None:
                return hit
        raise UserError(f"network {self.name!r} has no node {name!r}")

    def cable(self, a: tuple | str | int, b: tuple | str | int) -> int:
        """Index of the cable between nodes a and b (names or indices)."""
        ia = a if isinstance(a, (int, np.integer)) else self.node(a)
        ib = b if isinstance(b, (int, np.integer)) else self.node(b)
        hit = np.flatnonzero((self.link_u[0::2] == ia) & (self.link_v[0::2] == ib))
        if hit.size == 0:
            hit = np.flatnonzero((self.link_u[0::2] == ib) & (self.link_v[0::2] == ia))
        if hit.size == 0:
            raise UserError(f"no cable between {self.node_names[ia]} and {self.node_names[ib]}")
        return int(hit[0])

    def link_name(self, link: int) -> str:
        return f"{self.node_names[self.link_u[link]]}->{self.node_names[self.link_v[link]]}"


def make_network(
    name: str,
    node_names: list[tuple],
    tier: np.ndarray,
    cable_u: np.ndarray,
    cable_v: np.ndarray,
    cable_gbps: np.ndarray,
    cable_latency_s: np.ndarray,
    switch_latency_s: float,
) -> Network:
    """Build a Network from undirected cables: cable c becomes links 2c (u->v) and 2c+1 (v->u)."""
    tier = np.asarray(tier, dtype=np.int64)
    cu = np.asarray(cable_u, dtype=np.int64)
    cv = np.asarray(cable_v, dtype=np.int64)
    m = cu.shape[0]
    gbps = np.broadcast_to(np.asarray(cable_gbps, dtype=np.float64), (m,))
    lat = np.broadcast_to(np.asarray(cable_latency_s, dtype=np.float64), (m,))
    if len(node_names) != tier.shape[0]:
        raise UserError("network: node_names and tier differ in length")
    if m and (min(cu.min(), cv.min()) < 0 or max(cu.max(), cv.max()) >= tier.shape[0]):
        raise UserError("network: a cable names a node that does not exist")
    if np.any(cu == cv):
        raise UserError("network: a cable connects a node to itself")
    # Written as "not ok" so that NaN, which fails every comparison, is refused too.
    if not (np.all(gbps > 0) and np.all(np.isfinite(gbps)) and np.all(lat >= 0)
            and np.all(np.isfinite(lat))):
        raise UserError("network: link bandwidth must be finite and > 0, latency finite and >= 0")
    if not 0 <= switch_latency_s < float("inf"):
        raise UserError("network: switch latency must be finite and >= 0")
    link_u = np.empty(2 * m, dtype=np.int64)
    link_v = np.empty(2 * m, dtype=np.int64)
    link_u[0::2], link_u[1::2] = cu, cv
    link_v[0::2], link_v[1::2] = cv, cu
    return Network(
        name=name,
        node_names=list(node_names),
        tier=tier,
        hosts=np.flatnonzero(tier == 0).astype(np.int64),
        link_u=link_u,
        link_v=link_v,
        link_gbps=np.repeat(gbps, 2),
        link_latency_s=np.repeat(lat, 2),
        switch_latency_s=float(switch_latency_s),
    )


def fail_links(net: Network, cables: Iterable[int | tuple]) -> Network:
    """`net` without the given cables (both directions); nodes and host numbering unchanged.

    A cable is its index or a pair of node names / indices, e.g. (("edge", 0, 0), ("agg", 0, 1)).
    Routing on the result uses only what is left.
    """
    idx = []
    for c in cables:
        if isinstance(c, (int, np.integer)):
            if not 0 <= c < net.n_cables:
                raise UserError(f"fail_links: cable {c} out of range 0..{net.n_cables - 1}")
            idx.append(int(c))
        elif isinstance(c, (tuple, list)) and len(c) == 2:
            idx.append(net.cable(c[0], c[1]))
        else:
            raise UserError(f"fail_links: a cable is an index or a pair of nodes, got {c!r}")
    gone = np.unique(np.asarray(idx, dtype=np.int64))
    keep = np.ones(net.n_cables, dtype=bool)
    keep[gone] = False
    keep_links = np.repeat(keep, 2)  # cable c is links 2c, 2c+1: the pairing survives
    return Network(
        name=f"{net.name}-minus{gone.size}",
        node_names=net.node_names,
        tier=net.tier,
        hosts=net.hosts,
        link_u=net.link_u[keep_links],
        link_v=net.link_v[keep_links],
        link_gbps=net.link_gbps[keep_links],
        link_latency_s=net.link_latency_s[keep_links],
        switch_latency_s=net.switch_latency_s,
    )


def cable_tier(net: Network) -> np.ndarray:
    """Tier of each cable's upper end: 1 host-edge, 2 edge-agg (leaf-spine), 3 agg-core."""
    return np.maximum(net.tier[net.link_u[0::2]], net.tier[net.link_v[0::2]])


def fail_random(net: Network, count: int, tier: int | None = None, seed: int = 0) -> Network:
    """Fail `count` distinct cables chosen uniformly (seeded) among those whose upper end is at
    `tier` (see cable_tier); tier None means any switch-to-switch cable."""
    ct = cable_tier(net)
    lower = np.minimum(net.tier[net.link_u[0::2]], net.tier[net.link_v[0::2]])
    pool = np.flatnonzero(lower > 0) if tier is None else np.flatnonzero(ct == tier)
    if count < 0 or count > pool.size:
        where = "switch-to-switch" if tier is None else f"tier-{tier}"
        raise UserError(f"fail_random: cannot fail {count} of {pool.size} {where} cables")
    rng = np.random.default_rng(seed)
    return fail_links(net, rng.choice(pool, size=count, replace=False).tolist())

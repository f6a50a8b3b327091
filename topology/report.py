"""What a network is: counts, oversubscription, bisection bandwidth, diameter, equal-cost paths.

Bisection of the layered trees is computed from the structure: split the hosts into halves by
host number (whole pods when the pod count is even), let S_t be the left hosts plus every switch
up to tier t whose whole subtree is left-side; each S_t is a cut, and the bisection is the
smallest of them, min_t (capacity leaving S_t). For fat-tree / Clos / leaf-spine the tier cuts
are where the bottleneck is, so this is the true min cut (tests hold it to a max-flow on small
networks); other graphs get the max-flow itself.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from distnet.common.errors import UserError
from topology.network import Network
from topology.routing import UNREACHABLE, route, tree_tables


def tier_labels(net: Network) -> dict[int, str]:
    """tier -> the kinds of node on it, e.g. {0: "host", 1: "edge", 2: "agg", 3: "core"}."""
    out: dict[int, str] = {}
    for t in np.unique(net.tier).tolist():
        kinds = sorted({str(net.node_names[i][0]) for i in np.flatnonzero(net.tier == t)})
        out[int(t)] = "/".join(kinds)
    return out


def oversubscription(net: Network) -> dict[str, float]:
    """Per switch tier with uplinks: total downlink / total uplink capacity."""
    tu, tv = net.tier[net.link_u], net.tier[net.link_v]
    labels = tier_labels(net)
    out: dict[str, float] = {}
    for t in range(1, int(net.tier.max()) + 1):
        up = net.link_gbps[(tu == t) & (tv > t)].sum()
        down = net.link_gbps[(tu == t) & (tv < t)].sum()
        if up > 0:
            out[labels[t]] = float(down / up)
    return out


def max_flow_gbps(net: Network, left_hosts: np.ndarray, right_hosts: np.ndarray) -> float:
    """Max flow (= min cut) from one host set to another: Edmonds-Karp, for small networks."""
    n = net.n_nodes
    source, sink = n, n + 1
    cap: dict[tuple[int, int], float] = {}
    adj: list[set[int]] = [set() for _ in range(n + 2)]

    def add(u: int, v: int, c: float) -> None:
        cap[u, v] = cap.get((u, v), 0.0) + c
        cap.setdefault((v, u), 0.0)
        adj[u].add(v)
        adj[v].add(u)

    for u, v, c in zip(net.link_u.tolist(), net.link_v.tolist(), net.link_gbps.tolist(),
                       strict=True):
        add(u, v, c)
    for h in np.asarray(left_hosts).tolist():
        add(source, int(net.hosts[h]), float("inf"))
    for h in np.asarray(right_hosts).tolist():
        add(int(net.hosts[h]), sink, float("inf"))
    total = 0.0
    while True:
        parent = {source: source}
        queue = deque([source])
        while queue and sink not in parent:
            u = queue.popleft()
            for v in sorted(adj[u]):
                if v not in parent and cap[u, v] > 1e-12:
                    parent[v] = u
                    queue.append(v)
        if sink not in parent:
            return total
        push, v = float("inf"), sink
        while v != source:
            push = min(push, cap[parent[v], v])
            v = parent[v]
        v = sink
        while v != source:
            cap[parent[v], v] -= push
            cap[v, parent[v]] += push
            v = parent[v]
        total += push


def bisection_gbps(net: Network) -> tuple[float, str]:
    """(one-direction bisection bandwidth in Gb/s, how it was computed)."""
    half = net.n_hosts // 2
    if half == 0:
        return 0.0, "fewer than two hosts"
    left = np.arange(half)
    t = tree_tables(net)
    if t is None:
        if net.n_nodes > 2000:
            raise UserError(f"bisection: {net.name} is not a layered tree and too big for max-flow")
        right = np.arange(half, net.n_hosts)
        return max_flow_gbps(net, left, right), "max-flow between host halves"
    is_left_host = np.zeros(net.n_nodes, dtype=bool)
    is_left_host[net.hosts[left]] = True
    # an edge switch is left-side when all its hosts are
    host_links = net.tier[net.link_u] == 0
    edge_has_right = np.zeros(net.n_nodes, dtype=bool)
    edge_has_right[net.link_v[host_links & ~is_left_host[net.link_u]]] = True
    left_cols = np.zeros(t.reach.shape[1], dtype=bool)
    edges = np.flatnonzero(net.tier == 1)
    left_cols[t.col[edges]] = ~edge_has_right[edges]
    outside = np.any(t.reach & ~left_cols, axis=1)
    owned_rows = np.asarray(np.any(t.reach, axis=1) & ~outside)
    owned = is_left_host.copy()
    sw = np.flatnonzero(t.row >= 0)
    owned[sw] = owned_rows[t.row[sw]]
    cuts = []
    for top in range(int(net.tier.max())):
        inside = owned & (net.tier <= top)
        leaving = inside[net.link_u] & ~inside[net.link_v]
        cuts.append(float(net.link_gbps[leaving].sum()))
    return min(cuts), "smallest tier cut around half the hosts"


def diameter_hops(net: Network) -> int | None:
    """Longest shortest host-to-host path in links (None if some pair is disconnected)."""
    if net.n_hosts < 2:
        return 0
    t = tree_tables(net)
    if t is None:
        hosts = np.arange(net.n_hosts)
        worst = 0
        for h in hosts:
            r = route(net, np.full(net.n_hosts, h), hosts, mode="dmodk")
            worst = max(worst, int(r.hops.max()))
        return worst
    if np.any(t.host_edge < 0):
        return None
    edges = np.unique(t.host_edge)
    cost = t.up_cost[np.ix_(t.row[edges], t.col[edges])].astype(np.int64)
    if np.any(cost >= UNREACHABLE):
        return None
    return 2 + 2 * int(cost.max())


def equal_cost_paths(net: Network, a: int, b: int, limit: int = 16) -> tuple[int, list[list]]:
    """(number of equal-cost paths host a -> host b, up to `limit` of them as node names)."""
    r = route(net, np.array([a]), np.array([b]), mode="ideal")
    links = r.links_of(0)
    if links.size == 0:
        return (1, [[net.node_names[net.hosts[a]]]])
    nxt: dict[int, list[int]] = {}
    for u, v in sorted(zip(net.link_u[links].tolist(), net.link_v[links].tolist(), strict=True)):
        nxt.setdefault(u, []).append(v)
    src, dst = int(net.hosts[a]), int(net.hosts[b])
    count: dict[int, int] = {dst: 1}
    for u in reversed(_topo_order(src, nxt)):
        if u != dst:
            count[u] = sum(count[v] for v in nxt.get(u, []))
    paths: list[list] = []
    stack = [[src]]
    while stack and len(paths) < limit:
        path = stack.pop()
        if path[-1] == dst:
            paths.append([net.node_names[n] for n in path])
            continue
        stack.extend(path + [v] for v in reversed(nxt.get(path[-1], [])))
    return count[src], paths


def _topo_order(src: int, nxt: dict[int, list[int]]) -> list[int]:
    order, seen = [], set()

    def visit(u: int) -> None:
        seen.add(u)
        for v in nxt.get(u, []):
            if v not in seen:
                visit(v)
        order.append(u)

    visit(src)
    return order[::-1]


def info(net: Network, a: int = 0, b: int | None = None, max_paths: int = 8) -> dict:
    """Summary of `net` as plain data; paths are counted between hosts a and b (default last)."""
    b = net.n_hosts - 1 if b is None else b
    for h in (a, b):
        if not 0 <= h < net.n_hosts:
            raise UserError(f"info: host {h} out of range 0..{net.n_hosts - 1}")
    labels = tier_labels(net)
    bis, how = bisection_gbps(net)
    host_gbps = float(net.link_gbps[net.tier[net.link_u] == 0].sum())
    n_paths, paths = equal_cost_paths(net, a, b, max_paths)
    return {
        "name": net.name,
        "hosts": net.n_hosts,
        "switches": {labels[t]: int((net.tier == t).sum()) for t in labels if t > 0},
        "switches_total": int((net.tier > 0).sum()),
        "cables": net.n_cables,
        "links": net.n_links,
        "oversubscription": oversubscription(net),
        "bisection_gbps": bis,
        "bisection_method": how,
        "full_bisection_fraction": bis / (host_gbps / 2) if host_gbps else 0.0,
        "diameter_hops": diameter_hops(net),
        "paths_between": [net.node_names[net.hosts[a]], net.node_names[net.hosts[b]]],
        "equal_cost_paths": n_paths,
        "paths": paths,
    }


def info_text(net: Network, a: int = 0, b: int | None = None) -> str:
    d = info(net, a, b)
    sw = ", ".join(f"{n} {k}" for k, n in d["switches"].items())
    over = ", ".join(f"{k} {v:g}:1" for k, v in d["oversubscription"].items()) or "-"
    lines = [
        f"network      {d['name']}",
        f"hosts        {d['hosts']:,}",
        f"switches     {d['switches_total']:,} ({sw})",
        f"cables       {d['cables']:,} ({d['links']:,} directed links)",
        f"oversub      {over}",
        f"bisection    {d['bisection_gbps']:,.0f} Gb/s "
        f"({d['full_bisection_fraction']:.2f} of full; {d['bisection_method']})",
        f"diameter     {d['diameter_hops']} hops",
        f"paths        {d['equal_cost_paths']} equal-cost paths "
        f"{d['paths_between'][0]} -> {d['paths_between'][1]}",
    ]
    lines += ["  " + " > ".join(str(n) for n in p) for p in d["paths"]]
    return "\n".join(lines)


def scaling_table(radixes: tuple[int, ...] = (16, 32, 48, 64, 128)) -> list[dict]:
    """Max hosts with k-port switches: 2-tier leaf-spine (k leaves of k/2 hosts, k/2 spines:
    k^2/2 hosts, 3k/2 switches) vs 3-tier fat-tree (k^3/4 hosts, 5k^2/4 switches)."""
    rows = []
    for k in radixes:
        if k < 2 or k % 2:
            raise UserError(f"scaling_table: radix must be even and >= 2, got {k}")
        rows.append({
            "radix": k,
            "leaf_spine_hosts": k * k // 2,
            "leaf_spine_switches": 3 * k // 2,
            "fat_tree_hosts": k**3 // 4,
            "fat_tree_switches": 5 * k * k // 4,
        })
    return rows


def scaling_text(rows: list[dict]) -> str:
    head = f"{'radix':>5} | {'leaf-spine hosts':>16} {'switches':>8} | " \
           f"{'fat-tree hosts':>14} {'switches':>8}"
    out = [head, "-" * len(head)]
    for r in rows:
        out.append(f"{r['radix']:>5} | {r['leaf_spine_hosts']:>16,} {r['leaf_spine_switches']:>8,}"
                   f" | {r['fat_tree_hosts']:>14,} {r['fat_tree_switches']:>8,}")
    return "\n".join(out)

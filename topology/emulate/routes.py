"""Forwarding tables for the emulated switches: per (switch, destination host) the next hops.

A next hop is a neighbour one step closer to the destination over the cables still up (BFS
distances; hosts other than the destination never forward), so on the folded-Clos builders these
are exactly the up-down equal-cost paths the simulator routes on, and after a failure they are
what a converged routing protocol would leave. Modes:
- ecmp: every equal-cost next hop; the kernel hashes each flow's 5-tuple over them;
- dmodk: one next hop, chosen as the simulator's D-mod-k does (at a hop with k choices take
  q mod k, then q //= k, starting from q = destination host number), found by walking from
  every source in host order; the first walk to reach a switch fixes its entry;
- single: the lowest-numbered next hop everywhere (everything shares one path: the worst case).
"""

from __future__ import annotations

from collections import deque

import numpy as np

from topology.network import Network

Hop = tuple[int, int]  # (neighbour node, cable)


def _adjacency(net: Network, failed: set[int]) -> list[list[Hop]]:
    adj: list[list[Hop]] = [[] for _ in range(net.n_nodes)]
    for c in range(net.n_cables):
        if c in failed:
            continue
        u, v = int(net.link_u[2 * c]), int(net.link_v[2 * c])
        adj[u].append((v, c))
        adj[v].append((u, c))
    for hops in adj:
        hops.sort()
    return adj


def _distances(net: Network, adj: list[list[Hop]], dest: int) -> np.ndarray:
    dist = np.full(net.n_nodes, -1, dtype=np.int64)
    dist[dest] = 0
    todo = deque([dest])
    is_host = net.host_of_node >= 0
    while todo:
        u = todo.popleft()
        if is_host[u] and u != dest:
            continue  # a host is an end point, never a transit
        for v, _ in adj[u]:
            if dist[v] < 0:
                dist[v] = dist[u] + 1
                todo.append(v)
    return dist


def next_hops(net: Network, routing: str, failed: set[int]) -> dict[tuple[int, int], list[Hop]]:
    """(node, destination host number) -> next hops, for every node that can reach it."""
    adj = _adjacency(net, failed)
    table: dict[tuple[int, int], list[Hop]] = {}
    for d, dest in enumerate(net.hosts.tolist()):
        dist = _distances(net, adj, dest)
        closer = {u: [(v, c) for v, c in adj[u] if dist[v] == dist[u] - 1]
                  for u in range(net.n_nodes) if dist[u] > 0}
        if routing == "ecmp":
            table.update({(u, d): hops for u, hops in closer.items()})
        elif routing == "single":
            table.update({(u, d): hops[:1] for u, hops in closer.items()})
        else:
            table.update(_dmodk(net, closer, d, dest))
    return table


def _dmodk(net: Network, closer: dict[int, list[Hop]], d: int, dest: int
           ) -> dict[tuple[int, int], list[Hop]]:
    out: dict[tuple[int, int], list[Hop]] = {}
    for src in net.hosts.tolist():
        if src == dest or src not in closer:
            continue
        node, q = src, d
        while node != dest:
            hops = closer[node]
            k = len(hops)
            pick = hops[q % k]
            if k > 1:
                q //= k
            out.setdefault((node, d), [pick])
            node = out[(node, d)][0][0]
    return out

"""What the kernel actually did: the path of every MPI TCP connection, and bytes per link.

A path is traced hop by hop with the forwarding tables themselves: `ip route get DST from SRC
[iif IN] ipproto tcp sport S dport D` in each namespace along the way returns the device the
5-tuple hash picks there (custom hash policy 3, see kernel.py), which names the next cable.
Links are numbered as the simulator's Network numbers them: cable c is link 2c from its end a
to end b, 2c + 1 back.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import numpy as np

from distnet.common.errors import UserError
from topology.emulate import kernel
from topology.emulate.plan import Plan
from topology.network import Network
from topology.routing import Routes

MAX_HOPS = 16


def _ports(plan: Plan) -> dict[tuple[str, str], tuple[int, str, str]]:
    """(namespace, device) -> (directed link leaving there, far namespace, far device)."""
    out = {}
    for c in plan.cables:
        out[(c.ns_a, c.if_a)] = (2 * c.index, c.ns_b, c.if_b)
        out[(c.ns_b, c.if_b)] = (2 * c.index + 1, c.ns_a, c.if_a)
    return out


def trace(plan: Plan, src: str, sport: int, dst: str, dport: int,
          ports: dict | None = None) -> list[int]:
    """Directed links a TCP segment src:sport -> dst:dport crosses, in order."""
    ports = ports or _ports(plan)
    by_ip = {h.data_ip: h.namespace for h in plan.hosts}
    if src not in by_ip or dst not in by_ip:
        raise UserError(f"emulate: {src} -> {dst} is not between two emulated hosts")
    ns, iif = by_ip[src], None
    links: list[int] = []
    while ns != by_ip[dst]:
        if len(links) >= MAX_HOPS:
            raise UserError(f"emulate: {src} -> {dst} loops past {MAX_HOPS} hops")
        cmd = ["ip", "-n", ns, "-j", "route", "get", dst, "from", src]
        cmd += ["iif", iif] if iif else []
        cmd += ["ipproto", "tcp", "sport", str(sport), "dport", str(dport)]
        dev = json.loads(kernel.run(cmd).stdout)[0]["dev"]
        link, ns, iif = ports[(ns, dev)]
        links.append(link)
    return links


def connection_paths(plan: Plan, conns: Iterable[list[Any]]) -> dict[tuple[int, int], list[int]]:
    """(src host, dst host) -> links of its data direction, from ss 5-tuples [src, sport, dst,
    dport(, bytes_sent)]. Open MPI keeps one connection per pair of processes; of several
    between two hosts (2 ranks per host: the node leaders' carries the data, the others' only
    barriers) the one that sent the most bytes, else the first."""
    host_of = {h.data_ip: h.index for h in plan.hosts}
    ports = _ports(plan)
    best: dict[tuple[int, int], tuple[float, str, int, str, int]] = {}
    for conn in sorted(conns):
        src, sport, dst, dport = conn[:4]
        sent = float(conn[4]) if len(conn) > 4 else 0.0
        key = (host_of[src], host_of[dst])
        if key not in best or sent > best[key][0]:
            best[key] = (sent, src, int(sport), dst, int(dport))
    return {key: trace(plan, s, sp, d, dp, ports) for key, (_, s, sp, d, dp) in best.items()}


def tx_bytes(plan: Plan) -> np.ndarray:
    """Bytes each directed link has carried so far (tx counter of its sending device)."""
    out = np.zeros(2 * len(plan.cables), dtype=np.float64)
    by_ns: dict[str, dict[str, float]] = {}
    for ns in plan.namespaces:
        stats = json.loads(kernel.run(["ip", "-n", ns, "-j", "-s", "link", "show"]).stdout)
        by_ns[ns] = {d["ifname"]: float(d["stats64"]["tx"]["bytes"]) for d in stats}
    for c in plan.cables:
        out[2 * c.index] = by_ns[c.ns_a].get(c.if_a, 0.0)
        out[2 * c.index + 1] = by_ns[c.ns_b].get(c.if_b, 0.0)
    return out


def pinned_routes(net: Network, table: dict[tuple[int, int], list[int]], fallback: str = "ecmp"):
    """A `route_fn` for topology.sim.simulate: flows between host pairs in `table` take their
    measured links, others the simulator's own `fallback` routing."""
    from topology.routing import route as sim_route

    def route(_net: Network, src: np.ndarray, dst: np.ndarray, mode: str = "ecmp",
              seed: int = 0) -> Routes:
        src, dst = np.asarray(src, np.int64), np.asarray(dst, np.int64)
        base = sim_route(net, src, dst, mode=fallback, seed=seed)
        ptr, lat, hops = [0], [], []
        links: list[int] = []
        for f, (s, d) in enumerate(zip(src.tolist(), dst.tolist(), strict=True)):
            path = table.get((s, d))
            if path is None or s == d:
                path = base.links_of(f).tolist()
            links += path
            ptr.append(len(links))
            arr = np.asarray(path, dtype=np.int64)
            n_sw = int(np.sum(net.tier[net.link_v[arr]] > 0)) if arr.size else 0
            lat.append(float(net.link_latency_s[arr].sum()) + n_sw * net.switch_latency_s)
            hops.append(len(path))
        return Routes(np.asarray(ptr, np.int64), np.asarray(links, np.int64),
                      np.ones(len(links)), np.asarray(lat), np.asarray(hops, np.int64))

    return route

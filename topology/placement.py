"""Where ranks run: rank -> host number, one rank per host.

packed: ranks on consecutive hosts (neighbours share edge switches and pods — what a scheduler
that fills racks does); scattered: round-robin over pods, rank i in pod i mod pods (the worst
case for locality, the best for spreading load); random: a seeded permutation; explicit: a list.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from distnet.common.errors import UserError
from topology.network import Network

PLACEMENTS = ("packed", "scattered", "random", "explicit")


def host_pods(net: Network) -> np.ndarray:
    """Pod of each host: the pod in ("host", pod, ...) names (the leaf for leaf-spine), else
    the host's first switch (custom networks)."""
    names = [net.node_names[n] for n in net.hosts]
    if names and all(len(nm) >= 3 and isinstance(nm[1], (int, np.integer)) for nm in names):
        return np.array([nm[1] for nm in names], dtype=np.int64)
    ptr, order = net.out_csr
    first = np.full(net.n_hosts, -1, dtype=np.int64)
    has = ptr[net.hosts + 1] > ptr[net.hosts]
    first[has] = net.link_v[order[ptr[net.hosts[has]]]]
    return np.unique(first, return_inverse=True)[1].astype(np.int64)


def place(
    net: Network,
    n_ranks: int,
    mode: str = "packed",
    seed: int = 0,
    hosts: Sequence[int] | np.ndarray | None = None,
) -> np.ndarray:
    """rank -> host number (int64, length n_ranks) under the given placement mode."""
    if int(n_ranks) != n_ranks or n_ranks < 1:
        raise UserError(f"placement: need at least one rank, got {n_ranks!r}")
    n_ranks = int(n_ranks)
    if n_ranks > net.n_hosts:
        raise UserError(f"placement: {n_ranks} ranks do not fit on {net.n_hosts} hosts")
    if mode == "packed":
        return np.arange(n_ranks, dtype=np.int64)
    if mode == "scattered":
        pod = host_pods(net)
        # j-th host of its pod; ordering by (j, pod) deals one host per pod per round
        order = np.argsort(pod, kind="stable")
        first = np.r_[0, np.flatnonzero(np.diff(pod[order])) + 1]
        slot = np.empty(net.n_hosts, dtype=np.int64)
        sizes = np.diff(np.r_[first, net.n_hosts])
        slot[order] = np.arange(net.n_hosts) - np.repeat(first, sizes)
        return np.lexsort((pod, slot))[:n_ranks].astype(np.int64)
    if mode == "random":
        rng = np.random.default_rng(seed)
        return rng.permutation(net.n_hosts)[:n_ranks].astype(np.int64)
    if mode == "explicit":
        if hosts is None:
            raise UserError("placement: explicit mode needs a host list")
        out = np.asarray(hosts, dtype=np.int64).reshape(-1)
        if out.size != n_ranks:
            raise UserError(f"placement: {out.size} hosts given for {n_ranks} ranks")
        if out.min() < 0 or out.max() >= net.n_hosts:
            raise UserError(f"placement: host number out of range 0..{net.n_hosts - 1}")
        if np.unique(out).size != out.size:
            raise UserError("placement: a host is listed twice (one rank per host)")
        return out
    raise UserError(f"unknown placement {mode!r} (known: {', '.join(PLACEMENTS)})")


def check_fits(net: Network, ranks: int) -> None:
    """One rank per host: refuse more ranks than `net` has hosts."""
    if ranks > net.n_hosts:
        raise UserError(f"{ranks} ranks do not fit on {net.name} ({net.n_hosts} hosts)")


def node_of_ranks(net: Network, hosts: np.ndarray) -> np.ndarray:
    """The tier-1 switch (ToR/leaf/edge) of each rank's host: `hierarchical`'s notion of a node.

    One rank per host in these models, so the cheap level of the hierarchy is the rack.
    """
    ptr, order = net.out_csr
    host_nodes = net.hosts[np.asarray(hosts, dtype=np.int64)]
    return np.asarray(net.link_v[order[ptr[host_nodes]]], dtype=np.int64)


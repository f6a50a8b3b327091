"""Host-to-host routes for many flows at once: ECMP hashing, ideal fluid spreading, D-mod-k.

All built-in topologies are multi-rooted trees (folded Clos): every link joins adjacent tiers and
every host hangs off one tier-1 switch. Routes there are up-down (valley-free, as datacentre BGP
routes them): climb to the lowest tier from which the destination's edge switch is reachable
downwards, then descend. Two tables per network, built once by tier sweeps, make every hop a
vectorised lookup even after link failures:
- reach[s, e]: switch s reaches edge switch e using down-links only;
- up_cost[s, e]: up-hops from s to the nearest switch with reach[., e] (INF if none).
A hop is a valid equal-cost choice iff it keeps the remaining distance decreasing, so ECMP only
ever chooses among surviving up-links that still lead to the destination. Other graphs (custom
networks that are not layered trees) use plain shortest paths from per-destination BFS, and so
do the rare pairs that failures leave connected only through a valley (up, down, up, down).

All flows advance one hop per iteration as arrays of "states" (flow, node, fraction of the flow,
latency so far); ideal spreading splits a state's fraction evenly over its valid next hops and
merges states that meet at the same node, which is exactly the fluid split over all equal-cost
paths (1/(k/2) per agg uplink, 1/(k/2)^2 per core path in a fat-tree).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np

from distnet.common.errors import UserError
from topology.network import Network

MODES = ("ecmp", "ideal", "dmodk")
UNREACHABLE = 100  # int8 "unreachable" in up_cost; trees have a handful of tiers
# Ideal spreading keeps every equal-cost path: (k/2)^2 per cross-pod flow in a fat-tree, so a
# k=48 permutation needs ~33M path entries (~40 s, several GB). Past these sizes refuse with a
# clear error instead of swapping: per sweep (candidate hops) and in total (path entries).
_MAX_CANDIDATES = 8_000_000
_MAX_ENTRIES = 16_000_000


@dataclass(frozen=True)
class Routes:
    """CSR over flows: the links each flow uses and the share of its rate on each."""

    flow_ptr: np.ndarray  # int64 (F+1,)
    link: np.ndarray  # int64 (nnz,) directed link index, in hop order within a flow
    frac: np.ndarray  # float64 (nnz,) fraction of the flow's rate on that link
    latency_s: np.ndarray  # float64 (F,) links + switches, max over paths for ideal
    hops: np.ndarray  # int64 (F,) links on the path

    @property
    def n_flows(self) -> int:
        return int(self.flow_ptr.shape[0] - 1)

    def links_of(self, f: int) -> np.ndarray:
        return self.link[self.flow_ptr[f] : self.flow_ptr[f + 1]]

    def fracs_of(self, f: int) -> np.ndarray:
        return self.frac[self.flow_ptr[f] : self.flow_ptr[f + 1]]


@dataclass(frozen=True)
class _TreeTables:
    row: np.ndarray  # node -> switch row, -1 for hosts
    col: np.ndarray  # node -> tier-1 column, -1 otherwise
    reach: np.ndarray  # bool (switches, tier-1 switches)
    up_cost: np.ndarray  # int8 (switches, tier-1 switches)
    host_edge: np.ndarray  # host number -> its tier-1 switch node, -1 if cut off
    dir_ptr: np.ndarray  # (2N+1,) links of node u going up: dir_links[dir_ptr[2u]:dir_ptr[2u+1]],
    dir_links: np.ndarray  # going down: dir_links[dir_ptr[2u+1]:dir_ptr[2u+2]]; sorted by v
    down_link: np.ndarray  # int32 (switches, tier-1): the one down-link toward e, -1 none, -2 many
    host_in_link: np.ndarray  # host number -> link from its edge switch down to it, -1 if cut


_TABLES: weakref.WeakKeyDictionary[Network, _TreeTables | None] = weakref.WeakKeyDictionary()
_ROUTE_CACHE: weakref.WeakKeyDictionary[Network, dict] = weakref.WeakKeyDictionary()
_CACHE_ENTRIES = 32


def is_layered_tree(net: Network) -> bool:
    """True when every link joins adjacent tiers and every host has at most one link (to tier 1)."""
    tu, tv = net.tier[net.link_u], net.tier[net.link_v]
    if np.any(np.abs(tu - tv) != 1):
        return False
    host_deg = np.bincount(net.link_u, minlength=net.n_nodes)[net.hosts]
    return bool(np.all(host_deg <= 1))


def _segments(keys_sorted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique keys of a sorted array and the start of each run."""
    starts = np.flatnonzero(np.r_[True, keys_sorted[1:] != keys_sorted[:-1]])
    return keys_sorted[starts], starts


def tree_tables(net: Network) -> _TreeTables | None:
    """The reach / up_cost tables of a layered tree (None for other graphs), cached per network."""
    if net in _TABLES:
        return _TABLES[net]
    tables = _build_tree_tables(net) if is_layered_tree(net) else None
    _TABLES[net] = tables
    return tables


def _build_tree_tables(net: Network) -> _TreeTables:
    switches = np.flatnonzero(net.tier > 0)
    edges = np.flatnonzero(net.tier == 1)
    row = np.full(net.n_nodes, -1, dtype=np.int64)
    row[switches] = np.arange(switches.size)
    col = np.full(net.n_nodes, -1, dtype=np.int64)
    col[edges] = np.arange(edges.size)
    reach = np.zeros((switches.size, edges.size), dtype=bool)
    reach[row[edges], col[edges]] = True
    tu, tv = net.tier[net.link_u], net.tier[net.link_v]
    top = int(net.tier.max()) if net.n_nodes else 0
    for t in range(2, top + 1):
        sel = np.flatnonzero((tu == t) & (tv == t - 1))
        sel = sel[np.argsort(net.link_u[sel], kind="stable")]
        if sel.size:
            parents, starts = _segments(net.link_u[sel])
            reach[row[parents]] = np.logical_or.reduceat(reach[row[net.link_v[sel]]], starts)
    up_cost = np.where(reach, 0, UNREACHABLE).astype(np.int8)
    for t in range(top - 1, 0, -1):
        sel = np.flatnonzero((tu == t) & (tv == t + 1))
        sel = sel[np.argsort(net.link_u[sel], kind="stable")]
        if sel.size:
            kids, starts = _segments(net.link_u[sel])
            best = np.minimum.reduceat(up_cost[row[net.link_v[sel]]], starts).astype(np.int16) + 1
            cur = up_cost[row[kids]]
            up_cost[row[kids]] = np.minimum(cur, np.minimum(best, UNREACHABLE)).astype(np.int8)
    host_links = np.flatnonzero(net.tier[net.link_u] == 0)
    host_edge = np.full(net.n_hosts, -1, dtype=np.int64)
    host_edge[net.host_of_node[net.link_u[host_links]]] = net.link_v[host_links]
    # candidates split by direction: an up-down walk only ever looks at one of the two sets
    key = 2 * net.link_u + (tv < tu)
    dir_links = np.lexsort((net.link_v, key)).astype(np.int64)
    dir_ptr = np.zeros(2 * net.n_nodes + 1, dtype=np.int64)
    np.cumsum(np.bincount(key, minlength=2 * net.n_nodes), out=dir_ptr[1:])
    down_link = _unique_down_links(net, row, reach)
    host_in = np.full(net.n_hosts, -1, dtype=np.int64)
    into_host = np.flatnonzero(net.tier[net.link_v] == 0)
    host_in[net.host_of_node[net.link_v[into_host]]] = into_host
    return _TreeTables(
        row, col, reach, up_cost, host_edge, dir_ptr, dir_links, down_link, host_in
    )


def _unique_down_links(net: Network, row: np.ndarray, reach: np.ndarray) -> np.ndarray:
    """down_link[s, e]: the single down-link of s whose child reaches edge e (-1 none, -2 many).

    In the built-in trees the way down is unique (each core has one cable per pod, each agg one
    per ToR), so descending needs one lookup instead of scanning every down-port of a switch.
    """
    n_cols = reach.shape[1]
    down_link = np.full(reach.size, -1, dtype=np.int32)
    count = np.zeros(reach.size, dtype=np.int64)
    tu, tv = net.tier[net.link_u], net.tier[net.link_v]
    sel = np.flatnonzero((tv == tu - 1) & (tv > 0))
    for part in np.array_split(sel, max(1, sel.size // 8192)):
        li, cols = np.nonzero(reach[row[net.link_v[part]]])
        cell = row[net.link_u[part[li]]] * n_cols + cols
        count += np.bincount(cell, minlength=reach.size)
        down_link[cell] = part[li]
    down_link[count > 1] = -2
    return down_link.reshape(reach.shape)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a cheap, well-spread, platform-independent hash of uint64 words."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def ecmp_hash(src: np.ndarray, dst: np.ndarray, seed: int, salt: np.ndarray, node: np.ndarray):
    """Per-switch flow hash of (src, dst, seed, salt): one flow always takes the same path,
    and mixing in the switch makes the choices at successive hops independent."""
    with np.errstate(over="ignore"):
        h = _mix64(src.astype(np.uint64) + np.uint64(seed & 0xFFFFFFFFFFFFFFFF))
        h = _mix64(h ^ dst.astype(np.uint64))
        h = _mix64(h ^ salt.astype(np.uint64))
        return _mix64(h ^ node.astype(np.uint64))


def _bfs_dist(net: Network, targets: np.ndarray) -> np.ndarray:
    """Hop distance from every node to each target host; hosts are never transit nodes."""
    ptr, order = net.out_csr
    dist = np.full((targets.size, net.n_nodes), -1, dtype=np.int64)
    is_host = net.tier == 0
    for i, t in enumerate(targets):
        dist[i, t] = 0
        frontier = np.array([t], dtype=np.int64)
        d = 0
        while frontier.size:
            d += 1
            if d > 1:
                frontier = frontier[~is_host[frontier]]
            deg = ptr[frontier + 1] - ptr[frontier]
            base = np.repeat(ptr[frontier] - np.cumsum(deg) + deg, deg)
            nxt = net.link_v[order[base + np.arange(deg.sum())]]
            nxt = np.unique(nxt[dist[i, nxt] < 0])
            dist[i, nxt] = d
            frontier = nxt
    return dist


def route(
    net: Network,
    src_hosts: np.ndarray,
    dst_hosts: np.ndarray,
    mode: str = "ecmp",
    seed: int = 0,
    salt: np.ndarray | None = None,
) -> Routes:
    """Route flows src_hosts[f] -> dst_hosts[f] (host numbers) on `net`.

    mode "ecmp": per-switch hash of (src, dst, seed, salt[f]) over the equal-cost next hops;
    "ideal": fluid split over all equal-cost paths; "dmodk": destination-mod-k, at each hop with
    m > 1 choices take port q mod m then q //= m, starting from q = destination host number
    (Zahavi's D-mod-k for fat-trees: edge port d mod k/2, agg port (d div k/2) mod k/2).
    Flows with src == dst get no links and zero latency. A disconnected pair is a UserError.
    """
    if mode not in MODES:
        raise UserError(f"unknown routing mode {mode!r} (known: {', '.join(MODES)})")
    src = np.asarray(src_hosts, dtype=np.int64).reshape(-1)
    dst = np.asarray(dst_hosts, dtype=np.int64).reshape(-1)
    if src.shape != dst.shape:
        raise UserError(f"route: {src.size} sources but {dst.size} destinations")
    if src.size and (min(src.min(), dst.min()) < 0 or max(src.max(), dst.max()) >= net.n_hosts):
        raise UserError(f"route: host number out of range 0..{net.n_hosts - 1}")
    salt_a = np.zeros(src.size, np.int64) if salt is None else np.asarray(salt, np.int64)
    if salt_a.shape != src.shape:
        raise UserError(f"route: salt has {salt_a.size} entries for {src.size} flows")
    # the simulator routes the same step pattern many times: remember recent answers
    key = (mode, int(seed), src.tobytes(), dst.tobytes(), salt_a.tobytes())
    cache = _ROUTE_CACHE.setdefault(net, {})
    if key in cache:
        return cache[key]
    routes = _route(net, src, dst, mode, int(seed), salt_a)
    for a in (routes.flow_ptr, routes.link, routes.frac, routes.latency_s, routes.hops):
        a.flags.writeable = False  # cached and shared between callers
    if len(cache) >= _CACHE_ENTRIES:
        cache.pop(next(iter(cache)))
    cache[key] = routes
    return routes


def _route(
    net: Network, src: np.ndarray, dst: np.ndarray, mode: str, seed: int, salt_a: np.ndarray
) -> Routes:
    tables = tree_tables(net)
    if tables is None:
        return _walk(net, src, dst, mode, seed, salt_a, _bfs_walk(net, src, dst))
    # Failures can leave a connected pair with no up-down path (its only way round dips
    # through a lower tier); those few flows take BFS shortest paths, as BGP with per-switch
    # AS numbers would, and only a truly disconnected pair is an error.
    lost = _no_up_down_path(tables, src, dst)
    if not lost.any():
        return _walk(net, src, dst, mode, seed, salt_a, _tree_walk(net, tables, dst))
    keep = np.flatnonzero(~lost)
    detour = np.flatnonzero(lost)
    a = _walk(net, src[keep], dst[keep], mode, seed, salt_a[keep],
              _tree_walk(net, tables, dst[keep]))
    b = _walk(net, src[detour], dst[detour], mode, seed, salt_a[detour],
              _bfs_walk(net, src[detour], dst[detour]))
    return _combine(src.size, [(keep, a), (detour, b)])


def _combine(n_flows: int, parts: list[tuple[np.ndarray, Routes]]) -> Routes:
    """Routes of disjoint flow subsets (flow indices, routes) as one Routes in flow order."""
    flows, links, fracs = [], [], []
    latency, hops = np.zeros(n_flows), np.zeros(n_flows, dtype=np.int64)
    for idx, r in parts:
        flows.append(np.repeat(idx, np.diff(r.flow_ptr)))
        links.append(r.link)
        fracs.append(r.frac)
        latency[idx], hops[idx] = r.latency_s, r.hops
    return _to_csr(n_flows, flows, links, fracs, latency, hops)


def _walk(net: Network, src: np.ndarray, dst: np.ndarray, mode: str, seed: int,
          salt_a: np.ndarray, step_fn) -> Routes:
    """Advance every flow hop by hop, choosing among the valid next hops `step_fn` offers."""
    n_flows = src.size
    src_node, dst_node = net.hosts[src], net.hosts[dst]
    # states: one per (flow, node) the flow currently occupies
    moving = src != dst
    st_flow = np.flatnonzero(moving)
    st_node = src_node[st_flow]
    st_frac = np.ones(st_flow.size)
    st_lat = np.zeros(st_flow.size)
    st_q = dst[st_flow].copy()
    ent_flow, ent_link, ent_frac = [], [], []
    n_entries = 0
    latency = np.zeros(n_flows)
    hops = np.zeros(n_flows, dtype=np.int64)
    for hop in range(1, 2 * net.n_nodes + 2):
        if st_flow.size == 0:
            break
        n_st = st_flow.size
        c_state, c_link, valid = step_fn(st_flow, st_node)
        v_idx = np.flatnonzero(valid)
        v_state = c_state[v_idx]
        n_valid = np.bincount(v_state, minlength=n_st)
        if np.any(n_valid == 0):
            bad = st_flow[np.flatnonzero(n_valid == 0)[0]]
            raise _disconnected(net, src[bad], dst[bad])
        rank = np.arange(v_idx.size) - (np.cumsum(n_valid) - n_valid)[v_state]
        if mode == "ideal":
            pick = v_idx
            new_state = v_state
            new_frac = st_frac[v_state] / n_valid[v_state]
        else:
            if mode == "ecmp":
                f = st_flow
                h = ecmp_hash(src[f], dst[f], seed, salt_a[f], st_node)
                choice = (h % n_valid.astype(np.uint64)).astype(np.int64)
            else:
                choice = st_q % n_valid
                st_q = np.where(n_valid > 1, st_q // n_valid, st_q)
            keep = rank == choice[v_state]
            pick = v_idx[keep]
            new_state = v_state[keep]
            new_frac = st_frac[new_state]
        link = c_link[pick]
        n_entries += link.size
        if n_entries > _MAX_ENTRIES:
            raise UserError(
                f"route: more than {_MAX_ENTRIES:,} path entries for {n_flows:,} flows; "
                "ideal spreading keeps every equal-cost path, use ecmp/dmodk or fewer flows"
            )
        ent_flow.append(st_flow[new_state])
        ent_link.append(link)
        ent_frac.append(new_frac)
        nxt = net.link_v[link]
        lat = st_lat[new_state] + net.link_latency_s[link]
        lat = lat + np.where(net.tier[nxt] > 0, net.switch_latency_s, 0.0)
        flow = st_flow[new_state]
        q = st_q[new_state] if mode == "dmodk" else st_q[:0]
        if mode == "ideal":
            flow, nxt, new_frac, lat = _merge_states(flow, nxt, new_frac, lat, net.n_nodes)
        done = nxt == dst_node[flow]
        np.maximum.at(latency, flow[done], lat[done])
        hops[flow[done]] = hop
        st_flow, st_node, st_frac, st_lat = flow[~done], nxt[~done], new_frac[~done], lat[~done]
        if mode == "dmodk":
            st_q = q[~done]
    else:  # pragma: no cover - valid hops always shorten the distance
        raise RuntimeError("routing did not converge")
    return _to_csr(n_flows, ent_flow, ent_link, ent_frac, latency, hops)


def _merge_states(flow, node, frac, lat, n_nodes):
    """Combine states of one flow at one node: fractions add, latency is the worst path's."""
    key = flow * n_nodes + node
    order = np.lexsort((lat, key))
    key_s = key[order]
    uniq, starts = _segments(key_s)
    ends = np.r_[starts[1:], key_s.size] - 1
    frac_sum = np.add.reduceat(frac[order], starts) if starts.size else frac[:0]
    return uniq // n_nodes, uniq % n_nodes, frac_sum, lat[order][ends]


def _to_csr(n_flows, ent_flow, ent_link, ent_frac, latency, hops) -> Routes:
    if ent_flow:
        flow = np.concatenate(ent_flow)
        link = np.concatenate(ent_link)
        frac = np.concatenate(ent_frac)
    else:
        flow, link, frac = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
    order = np.argsort(flow, kind="stable")  # keeps hop order within each flow
    flow_ptr = np.zeros(n_flows + 1, dtype=np.int64)
    np.cumsum(np.bincount(flow, minlength=n_flows), out=flow_ptr[1:])
    return Routes(flow_ptr, link[order].astype(np.int64), frac[order], latency, hops)


def _disconnected(net: Network, s: int, d: int) -> UserError:
    a, b = net.node_names[net.hosts[s]], net.node_names[net.hosts[d]]
    return UserError(f"hosts {a} and {b} are disconnected in {net.name} (failed links?)")


def _no_up_down_path(t: _TreeTables, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Flows between distinct hosts that have no valley-free path (or a host cut off)."""
    moving = src != dst
    es, ed = t.host_edge[src], t.host_edge[dst]
    cut = moving & ((es < 0) | (ed < 0))
    ok = ~cut & moving
    cost = np.zeros(src.size, dtype=np.int64)
    cost[ok] = t.up_cost[t.row[es[ok]], t.col[ed[ok]]]
    return cut | (cost >= UNREACHABLE)


def _csr_gather(
    ptr: np.ndarray, links: np.ndarray, key: np.ndarray, single: np.ndarray | None = None
):
    """(state of each candidate, candidate link) for the CSR rows `key` of every state, in
    state order; states with single[i] >= 0 get that one link instead of their row."""
    deg = ptr[key + 1] - ptr[key]
    if single is not None:
        deg = np.where(single >= 0, 1, deg)
    total = int(deg.sum())
    if total > _MAX_CANDIDATES:
        raise UserError(
            f"route: {total:,} candidate hops in one sweep (limit {_MAX_CANDIDATES:,}); "
            "ideal spreading keeps every equal-cost path, use ecmp/dmodk or fewer flows"
        )
    c_state = np.repeat(np.arange(key.size), deg)
    first = np.repeat(np.cumsum(deg) - deg, deg)
    if single is None:
        return c_state, links[ptr[key][c_state] + np.arange(total) - first]
    one = single[c_state]
    pos = np.minimum(ptr[key][c_state] + np.arange(total) - first, links.size - 1)
    return c_state, np.where(one >= 0, one, links[pos])


def _tree_walk(net: Network, t: _TreeTables, dst: np.ndarray):
    """Candidate next hops of each state and which of them are equal-cost choices.

    up_cost is 0 exactly where reach holds, so one flat int8 gather answers both questions:
    going down, a child is valid iff it reaches the destination edge (cost 0); going up, a
    parent is valid iff its cost is one less than here.
    """
    n_cols = t.up_cost.shape[1]
    flat_cost = t.up_cost.reshape(-1)
    dst_col = t.col[np.maximum(t.host_edge[dst], 0)]
    dst_node = net.hosts[dst]
    dst_edge = t.host_edge[dst]
    flat_down = t.down_link.reshape(-1).astype(np.int64)
    row = t.row

    def step(flow: np.ndarray, cur: np.ndarray):
        c = dst_col[flow]
        rc = row[cur]
        from_host = rc < 0
        cost = flat_cost[np.maximum(rc, 0) * n_cols + c]
        descending = ~from_host & (cost == 0)
        need = np.where(descending, 0, cost - 1)
        single = np.where(descending, flat_down[np.maximum(rc, 0) * n_cols + c], -1)
        single = np.where(cur == dst_edge[flow], t.host_in_link[dst[flow]], single)
        c_state, c_link = _csr_gather(t.dir_ptr, t.dir_links, 2 * cur + descending, single)
        nxt = net.link_v[c_link]
        rn = row[nxt]
        hit = flat_cost[np.maximum(rn, 0) * n_cols + c[c_state]] == need[c_state]
        valid = ((rn >= 0) & hit) | from_host[c_state] | (single[c_state] >= 0)
        valid |= nxt == dst_node[flow[c_state]]
        return c_state, c_link, valid

    return step


def _bfs_walk(net: Network, src: np.ndarray, dst: np.ndarray):
    dst_node = net.hosts[dst]
    targets, which = np.unique(dst_node, return_inverse=True)
    dist = _bfs_dist(net, targets)
    moving = np.flatnonzero(src != dst)
    far = dist[which[moving], net.hosts[src[moving]]]
    if np.any(far < 0):
        bad = moving[np.flatnonzero(far < 0)[0]]
        raise _disconnected(net, src[bad], dst[bad])

    ptr, order = net.out_csr

    def step(flow: np.ndarray, cur: np.ndarray):
        c_state, c_link = _csr_gather(ptr, order, cur)
        w, nxt = which[flow[c_state]], net.link_v[c_link]
        dn = dist[w, nxt]
        # hosts other than the destination never forward traffic
        transit_ok = (net.tier[nxt] > 0) | (nxt == dst_node[flow[c_state]])
        return c_state, c_link, (dn >= 0) & (dn == dist[w, cur[c_state]] - 1) & transit_ok

    return step


def sub_routes(routes: Routes, flows: np.ndarray, hops: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The CSR rows of `flows` (in that order) as a new CSR: ptr, link, frac.
    `hops` (entries per flow, np.diff(flow_ptr)) can be passed in when it is reused."""
    counts = (np.diff(routes.flow_ptr) if hops is None else hops)[flows]
    ptr = np.zeros(flows.shape[0] + 1, dtype=np.int64)
    np.cumsum(counts, out=ptr[1:])
    idx = np.repeat(routes.flow_ptr[flows] - ptr[:-1], counts) + np.arange(ptr[-1])
    return ptr, routes.link[idx], routes.frac[idx]

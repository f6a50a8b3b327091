"""A topology spec's Network as an emulation plan: namespaces, veth cables, addresses, routes.

Plain data only; nothing here touches the kernel (topology/emulate/apply.py does), so the plan is
unit-tested without root. Conventions (one line of why each):
- every host and every switch is a network namespace named PREFIX + node name: one prefix makes
  `down` (and a crashed run's cleanup) exact;
- a cluster owns one slot: the slot-th /20 of 198.18.0.0/16 (data) and of 198.19.0.0/16
  (management), so two live clusters never share an address (198.18.0.0/15 is the benchmark
  range, RFC 2544, so nothing real is ever addressed). Namespaces alone keep equal addresses
  apart in the kernel, but two concurrent clusters on the same data addresses once disturbed
  Open MPI's TCP BTL here, and a run that reaches its twin is only ever seen as a hang;
- cable c of the Network is a veth pair with /31 addresses block + 2c (end u) and + 2c + 1
  (end v) (RFC 3021 point-to-point links);
- a host's data address is its end of its first cable; the management network is on a bridge in
  the root namespace, one leg per host, never shaped or routed.
"""

from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass, field

import numpy as np

from distnet.common.errors import UserError
from topology.emulate.routes import next_hops
from topology.network import Network

DATA_NET = ipaddress.IPv4Network("198.18.0.0/16")
MGMT_NET = ipaddress.IPv4Network("198.19.0.0/16")
MGMT_BLOCK = 20  # prefix length of one cluster's management subnet: 16 clusters side by side
DATA_BLOCK = 20  # and of its data subnet: 2,048 cables (a k=6 fat-tree has 162)
MAX_PREFIX = 6  # interface names are at most 15 characters: PREFIX + "m" + host number
ROUTINGS = ("ecmp", "dmodk", "single")


@dataclass(frozen=True)
class Cable:
    index: int  # cable index in the Network
    a: str  # node names of both ends
    b: str
    ns_a: str
    ns_b: str
    if_a: str
    if_b: str
    ip_a: str
    ip_b: str
    gbps: float


@dataclass(frozen=True)
class Route:
    ns: str
    dest: str  # CIDR
    hops: list[tuple[str, str]]  # (gateway ip, device); several = ECMP multipath


@dataclass(frozen=True)
class Host:
    name: str
    index: int
    namespace: str
    mgmt_ip: str
    mgmt_if: str  # inside the host namespace
    mgmt_leg: str  # the bridge port in the root namespace
    data_ip: str
    data_ifaces: list[str]


@dataclass
class Plan:
    prefix: str
    spec: str
    routing: str
    mgmt_subnet: str  # e.g. 198.19.0.0/20
    bridge: str
    bridge_ip: str
    hosts: list[Host]
    switches: list[str]  # switch namespaces
    cables: list[Cable]
    routes: list[Route]
    failed: list[int] = field(default_factory=list)  # cable indices currently down
    data_subnet: str = str(DATA_NET)  # this cluster's block (state files of older runs: all)

    @property
    def namespaces(self) -> list[str]:
        return [h.namespace for h in self.hosts] + self.switches

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> Plan:
        d = dict(d)
        d["hosts"] = [Host(**h) for h in d["hosts"]]
        d["cables"] = [Cable(**c) for c in d["cables"]]
        d["routes"] = [Route(r["ns"], r["dest"], [tuple(h) for h in r["hops"]])
                       for r in d["routes"]]
        return cls(**d)

    def cable_between(self, a: str, b: str) -> Cable:
        for c in self.cables:
            if {c.a, c.b} == {a, b}:
                return c
        raise UserError(f"emulate: no cable between {a!r} and {b!r}")


def node_label(name: tuple, index: int, host_number: int) -> str:
    """Short readable node name: h3 for host 3, leaf0, spine1, agg1-0, core2, tor0 (custom)."""
    if host_number >= 0:
        return f"h{host_number}"
    if name and name[0] == "switch":  # custom network: the name the user gave
        label = str(name[1])
    else:
        label = str(name[0]) + "-".join(str(p) for p in name[1:])
    if not label.replace("-", "").replace("_", "").isalnum() or len(label) > 40:
        raise UserError(f"emulate: switch name {label!r} must be short letters, digits, - or _")
    return label


def check_prefix(prefix: str) -> str:
    body = prefix.rstrip("-")
    if not (1 <= len(prefix) <= MAX_PREFIX and body.isalnum() and body.isascii()
            and body[0].isalpha()):
        raise UserError(f"emulate: prefix {prefix!r} must be 1-{MAX_PREFIX} letters/digits "
                        "starting with a letter, optionally ending in '-'")
    return prefix


def mgmt_block(slot: int) -> ipaddress.IPv4Network:
    blocks = list(MGMT_NET.subnets(new_prefix=MGMT_BLOCK))
    if not 0 <= slot < len(blocks):
        raise UserError(f"emulate: management slot {slot} out of range 0..{len(blocks) - 1}")
    return blocks[slot]


def data_block(slot: int) -> ipaddress.IPv4Network:
    blocks = list(DATA_NET.subnets(new_prefix=DATA_BLOCK))
    if not 0 <= slot < len(blocks):
        raise UserError(f"emulate: data slot {slot} out of range 0..{len(blocks) - 1}")
    return blocks[slot]


def build_plan(net: Network, spec: str, prefix: str = "dn-", routing: str = "ecmp",
               mgmt_slot: int = 0, failed: list[int] | None = None) -> Plan:
    """The namespaces, cables, addresses and routes that emulate `net` (routes avoid `failed`);
    `mgmt_slot` picks both the management and the data block."""
    check_prefix(prefix)
    if routing not in ROUTINGS:
        raise UserError(f"emulate: unknown routing {routing!r} (known: {', '.join(ROUTINGS)})")
    block = mgmt_block(mgmt_slot)
    dblock = data_block(mgmt_slot)
    if 2 * net.n_cables > dblock.num_addresses:
        raise UserError(f"emulate: {net.n_cables} cables do not fit in {dblock}")
    if net.n_hosts > block.num_addresses - 3:
        raise UserError(f"emulate: {net.n_hosts} hosts do not fit in {block}")
    hnum = net.host_of_node
    labels = [node_label(net.node_names[i], i, int(hnum[i])) for i in range(net.n_nodes)]
    if len(set(labels)) != len(labels):
        raise UserError("emulate: two nodes share a name")
    ns = [prefix + lab for lab in labels]
    port = np.zeros(net.n_nodes, dtype=np.int64)
    base = int(dblock.network_address)
    cables: list[Cable] = []
    iface_ip: dict[tuple[int, int], tuple[str, str]] = {}  # (node, cable) -> (ifname, ip)
    for c in range(net.n_cables):
        u, v = int(net.link_u[2 * c]), int(net.link_v[2 * c])
        ends = []
        for node, off in ((u, 0), (v, 1)):
            ifname = f"{prefix}p{port[node]}"
            port[node] += 1
            ip = str(ipaddress.IPv4Address(base + 2 * c + off))
            iface_ip[(node, c)] = (ifname, ip)
            ends.append((ifname, ip))
        cables.append(Cable(c, labels[u], labels[v], ns[u], ns[v], ends[0][0], ends[1][0],
                            ends[0][1], ends[1][1], float(net.link_gbps[2 * c])))
    hosts: list[Host] = []
    for h, node in enumerate(net.hosts.tolist()):
        mine = [c for c in range(net.n_cables)
                if node in (net.link_u[2 * c], net.link_v[2 * c])]
        if not mine:
            raise UserError(f"emulate: host {labels[node]} has no cable")
        hosts.append(Host(labels[node], h, ns[node], str(block.network_address + 2 + h),
                          f"{prefix}m", f"{prefix}m{h}", iface_ip[(node, mine[0])][1],
                          [iface_ip[(node, c)][0] for c in mine]))
    routes = _routes(net, ns, iface_ip, hosts, routing, set(failed or []), str(dblock))
    switches = [ns[i] for i in range(net.n_nodes) if hnum[i] < 0]
    return Plan(prefix, spec, routing, str(block), f"{prefix}mgmt",
                str(block.network_address + 1), hosts, switches, cables, routes,
                sorted(set(failed or [])), str(dblock))


def _routes(net: Network, ns: list[str], iface_ip: dict, hosts: list[Host], routing: str,
            failed: set[int], data_subnet: str) -> list[Route]:
    """Host routes (/32 per destination host) in every switch, and the cluster's data block on
    every host."""
    out: list[Route] = []
    table = next_hops(net, routing, failed)
    for (node, dest_host), hops in sorted(table.items()):
        dest_ip = hosts[dest_host].data_ip
        gw = [(iface_ip[(nbr, c)][1], iface_ip[(node, c)][0]) for nbr, c in hops]
        if net.host_of_node[node] >= 0:
            continue  # hosts use the one data route below
        if len(gw) == 1 and gw[0][0] == dest_ip:
            continue  # directly attached: the connected /31 already routes it
        out.append(Route(ns[node], f"{dest_ip}/32", gw))
    for h in hosts:
        node = int(net.hosts[h.index])
        ups = [(int(net.link_v[2 * c] if net.link_u[2 * c] == node else net.link_u[2 * c]), c)
               for c in range(net.n_cables)
               if node in (net.link_u[2 * c], net.link_v[2 * c]) and c not in failed]
        gw = [(iface_ip[(nbr, c)][1], iface_ip[(node, c)][0]) for nbr, c in ups]
        if gw:
            out.append(Route(h.namespace, data_subnet, gw))
    return out

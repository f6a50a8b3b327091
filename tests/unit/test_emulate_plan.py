"""The emulation plan as plain data (no root needed): names, addresses, routes, commands."""

from __future__ import annotations

import ipaddress

import numpy as np
import pytest

from distnet.common.errors import UserError
from topology.emulate import kernel
from topology.emulate.plan import build_plan
from topology.network import fail_links
from topology.routing import route
from topology.spec import parse_network

SPEC = "leaf-spine:leaves=2,spines=2,hosts=2"
BENCH = ipaddress.IPv4Network("198.18.0.0/15")


def _plan(spec: str = SPEC, **kw):
    return build_plan(parse_network(spec, link_gbps=0.2), spec, **kw)


def test_names_and_addresses_stay_ours() -> None:
    plan = _plan(prefix="dz-")
    assert len(plan.namespaces) == 8 and len(plan.cables) == 8
    assert all(ns.startswith("dz-") for ns in plan.namespaces)
    for c in plan.cables:
        assert c.if_a.startswith("dz-") and c.if_b.startswith("dz-")
        assert len(c.if_a) <= 15 and len(c.if_b) <= 15
        for ip in (c.ip_a, c.ip_b):
            assert ipaddress.IPv4Address(ip) in BENCH
    for h in plan.hosts:
        assert ipaddress.IPv4Address(h.mgmt_ip) in ipaddress.IPv4Network(plan.mgmt_subnet)
    assert ipaddress.IPv4Network(plan.mgmt_subnet).subnet_of(BENCH)


def test_every_command_names_only_our_devices_and_namespaces() -> None:
    plan = _plan(prefix="dz-")
    ours = set(plan.namespaces) | {plan.bridge} | {h.mgmt_leg for h in plan.hosts}
    for cmd in kernel.up_cmds(plan):
        if cmd[:2] == ["ip", "-n"] or cmd[:2] == ["tc", "-n"]:
            assert cmd[2] in ours, cmd
        elif cmd[:3] in (["ip", "netns", "add"], ["ip", "netns", "exec"]):
            assert cmd[3] in ours, cmd
        else:  # root namespace: only the bridge and its legs
            assert cmd[:2] in (["ip", "link"], ["ip", "addr"]), cmd
            assert any(word in ours for word in cmd), cmd
        assert "eth0" not in cmd and "nat" not in cmd


def test_two_slots_share_no_address() -> None:
    """Two live clusters (another helper's and ours) must never hold the same address."""
    a, b = _plan(mgmt_slot=0), _plan(prefix="dz-", mgmt_slot=1)
    for p in (a, b):
        block = ipaddress.IPv4Network(p.data_subnet)
        assert all(ipaddress.IPv4Address(ip) in block for c in p.cables for ip in (c.ip_a, c.ip_b))
        assert all(r.dest == p.data_subnet for r in p.routes if r.ns in
                   {h.namespace for h in p.hosts})
    for attr in ("data_subnet", "mgmt_subnet"):
        assert not ipaddress.IPv4Network(getattr(a, attr)).overlaps(
            ipaddress.IPv4Network(getattr(b, attr)))
    from topology.emulate.launch import base_flags

    flags = base_flags(b)
    assert flags[flags.index("btl_tcp_if_include") + 1] == b.data_subnet


def test_ecmp_leaf_routes_split_over_both_spines() -> None:
    plan = _plan()
    leaf0 = [r for r in plan.routes if r.ns == "dn-leaf0"]
    assert sorted(r.dest for r in leaf0) == ["198.18.0.4/32", "198.18.0.6/32"]
    assert all(len(r.hops) == 2 for r in leaf0)
    host = [r for r in plan.routes if r.ns == "dn-h0"]
    assert len(host) == 1 and host[0].dest == plan.data_subnet == "198.18.0.0/20"
    cmd = kernel.route_cmd(leaf0[0])
    assert cmd.count("nexthop") == 2


def _walk(plan, net, src: int, dst: int) -> list[int]:
    """Cables a packet from host src to host dst crosses under the plan's tables."""
    by_ns = {(r.ns, r.dest): r for r in plan.routes}
    ip_to = {}
    for c in plan.cables:
        ip_to[c.ip_a] = (c.ns_a, c.index)
        ip_to[c.ip_b] = (c.ns_b, c.index)
    dest = plan.hosts[dst].data_ip
    ns, cables = plan.hosts[src].namespace, []
    first = by_ns[(ns, plan.data_subnet)].hops[0][0]
    ns, cab = ip_to[first]
    cables.append(cab)
    while ns != plan.hosts[dst].namespace:
        r = by_ns.get((ns, f"{dest}/32"))
        ns, cab = ip_to[dest] if r is None else ip_to[r.hops[0][0]]
        cables.append(cab)
    return cables


@pytest.mark.parametrize("spec", [SPEC, "fat-tree:k=4"])
def test_dmodk_tables_take_the_simulators_dmodk_paths(spec: str) -> None:
    net = parse_network(spec, link_gbps=0.2)
    plan = build_plan(net, spec, routing="dmodk")
    n = net.n_hosts
    src, dst = np.array([s for s in range(n) for d in range(n) if s != d]), np.array(
        [d for s in range(n) for d in range(n) if s != d])
    routes = route(net, src, dst, mode="dmodk")
    for f, (s, d) in enumerate(zip(src.tolist(), dst.tolist(), strict=True)):
        sim_cables = (routes.links_of(f) // 2).tolist()
        assert _walk(plan, net, s, d) == sim_cables, (s, d)


def test_failed_cable_is_avoided_and_single_uses_one_path() -> None:
    net = parse_network(SPEC, link_gbps=0.2)
    gone = net.cable(("leaf", 0), ("spine", 0))
    plan = build_plan(net, SPEC, failed=[gone])
    hops = {g for r in plan.routes for g, _ in r.hops}
    c = plan.cables[gone]
    assert c.ip_a not in hops and c.ip_b not in hops
    assert plan.failed == [gone]
    routes = route(fail_links(net, [gone]), np.array([0]), np.array([3]), mode="ecmp")
    assert routes.hops[0] == 4
    single = _plan(routing="single")
    assert all(len(r.hops) == 1 for r in single.routes)


@pytest.mark.parametrize("bad", [dict(prefix="x" * 9), dict(prefix="1a-"), dict(prefix="a b"),
                                 dict(routing="ospf"), dict(mgmt_slot=99)])
def test_bad_options_are_one_line_errors(bad: dict) -> None:
    with pytest.raises(UserError):
        _plan(**bad)


@pytest.mark.parametrize("argv", [
    ["up", "--link-gbps", "nan"], ["up", "--link-gbps", "1e9"], ["up", "--prefix", "bad prefix"],
    ["up", "--topology", "leaf-spine:leaves=2"], ["status", "--prefix", "zz-"],
    ["down", "--prefix", "zz-"], ["link", "down", "leaf0", "spine0", "--prefix", "zz-"],
    ["up", "--slots", "0"], ["up", "--routing", "ospf"],
])
def test_cli_bad_input_is_one_line_exit_2(argv: list[str], tmp_path) -> None:
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "topology", "emulate", *argv],
                         capture_output=True, text=True, timeout=60,
                         env={"DISTNET_EMULATE_DIR": str(tmp_path),
                              "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("topology: error: "), res.stderr

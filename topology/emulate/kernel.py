"""The plan as `ip`/`tc` commands, and the one place that runs them.

Commands are plain argv lists built by pure functions (unit-tested without root); `run` executes
them and turns a failure into a one-line UserError naming the command.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable

from distnet.common.errors import UserError
from topology.emulate.plan import Cable, Plan, Route

Cmd = list[str]
TBF_LATENCY = "50ms"  # queue bound at the shaper: deep enough for TCP, no standing bufferbloat
# Sysctls of every namespace: switches forward and hash each packet's 5-tuple (src, dst, proto,
# sport, dport: custom policy 3, fields 0x37) over the equal-cost next hops, as a switch ASIC
# does. Not policy 1: for a forwarded packet that already carries an L4 hash the kernel reuses it
# (skb->hash, the sending socket's random txhash, re-drawn on retransmission timeouts), so paths
# would be unpredictable by `ip route get` and could change mid-connection. rp_filter off
# because ECMP makes paths asymmetric (a reply can come in on another port than the request left
# by); no slow start after idle: a collective's flows idle between steps.
SYSCTLS = ("net.ipv4.ip_forward=1", "net.ipv4.fib_multipath_hash_policy=3",
           "net.ipv4.fib_multipath_hash_fields=0x0037",
           "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0",
           "net.ipv4.tcp_slow_start_after_idle=0")


def tbf(ns: str, dev: str, gbps: float) -> Cmd:
    """Shape one direction of a cable. The burst must cover a jiffy at the rate (tbf refills per
    timer tick) and a 64 KiB GSO segment, else tbf splits segments and undershoots the rate."""
    bits = int(round(gbps * 1e9))
    burst = max(1 << 17, bits // 8 // 200)
    return ["tc", "-n", ns, "qdisc", "replace", "dev", dev, "root", "tbf", "rate", f"{bits}bit",
            "burst", str(burst), "latency", TBF_LATENCY]


def route_cmd(r: Route) -> Cmd:
    cmd = ["ip", "-n", r.ns, "route", "replace", r.dest]
    if len(r.hops) == 1:
        return [*cmd, "via", r.hops[0][0], "dev", r.hops[0][1]]
    for gw, dev in r.hops:
        cmd += ["nexthop", "via", gw, "dev", dev]
    return cmd


def cable_cmds(c: Cable) -> list[Cmd]:
    return [
        ["ip", "link", "add", c.if_a, "netns", c.ns_a, "type", "veth", "peer", "name", c.if_b,
         "netns", c.ns_b],
        ["ip", "-n", c.ns_a, "addr", "add", f"{c.ip_a}/31", "dev", c.if_a],
        ["ip", "-n", c.ns_b, "addr", "add", f"{c.ip_b}/31", "dev", c.if_b],
        ["ip", "-n", c.ns_a, "link", "set", c.if_a, "up"],
        ["ip", "-n", c.ns_b, "link", "set", c.if_b, "up"],
        tbf(c.ns_a, c.if_a, c.gbps),
        tbf(c.ns_b, c.if_b, c.gbps),
    ]


def up_cmds(plan: Plan) -> list[Cmd]:
    """Everything `emulate up` runs, in order."""
    prefix = plan.mgmt_subnet.split("/")[1]
    cmds: list[Cmd] = []
    for ns in plan.namespaces:
        cmds += [["ip", "netns", "add", ns],
                 ["ip", "netns", "exec", ns, "sysctl", "-q", "-w", *SYSCTLS],
                 ["ip", "-n", ns, "link", "set", "lo", "up"]]
    for c in plan.cables:
        cmds += cable_cmds(c)
    cmds += [["ip", "link", "add", plan.bridge, "type", "bridge"],
             ["ip", "addr", "add", f"{plan.bridge_ip}/{prefix}", "dev", plan.bridge],
             ["ip", "link", "set", plan.bridge, "up"]]
    for h in plan.hosts:
        cmds += [["ip", "link", "add", h.mgmt_leg, "type", "veth", "peer", "name", h.mgmt_if,
                  "netns", h.namespace],
                 ["ip", "link", "set", h.mgmt_leg, "master", plan.bridge, "up"],
                 ["ip", "-n", h.namespace, "addr", "add", f"{h.mgmt_ip}/{prefix}", "dev",
                  h.mgmt_if],
                 ["ip", "-n", h.namespace, "link", "set", h.mgmt_if, "up"]]
    for c in plan.cables:
        if c.index in plan.failed:
            cmds += link_state_cmds(c, up=False)
    cmds += [route_cmd(r) for r in plan.routes]
    return cmds


def link_state_cmds(c: Cable, up: bool) -> list[Cmd]:
    word = "up" if up else "down"
    return [["ip", "-n", c.ns_a, "link", "set", c.if_a, word],
            ["ip", "-n", c.ns_b, "link", "set", c.if_b, word]]


def reroute_cmds(old: Iterable[Route], new: Iterable[Route]) -> list[Cmd]:
    """Move the switches' tables from `old` to `new`: replace what is there, delete what went."""
    new = list(new)
    keep = {(r.ns, r.dest) for r in new}
    cmds = [route_cmd(r) for r in new]
    cmds += [["ip", "-n", r.ns, "route", "del", r.dest] for r in old if (r.ns, r.dest) not in keep]
    return cmds


def run(cmd: Cmd, check: bool = True, timeout_s: float = 30) -> subprocess.CompletedProcess:
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except FileNotFoundError:
        raise UserError(f"emulate: {cmd[0]} not found (apt-get install iproute2)") from None
    except subprocess.TimeoutExpired:
        raise UserError(f"emulate: {' '.join(cmd)} timed out") from None
    if check and res.returncode:
        msg = (res.stderr.strip().splitlines() or ["failed"])[-1]
        raise UserError(f"emulate: {' '.join(cmd)}: {msg}")
    return res


def run_all(cmds: Iterable[Cmd]) -> None:
    for cmd in cmds:
        run(cmd)


def existing_namespaces() -> set[str]:
    res = run(["ip", "netns", "list"], check=False)
    return {line.split()[0] for line in res.stdout.splitlines() if line.strip()}


def root_links() -> set[str]:
    res = run(["ip", "-o", "link", "show"], check=False)
    return {line.split(":")[1].strip().split("@")[0] for line in res.stdout.splitlines()
            if line.count(":") >= 2}


def root_addresses() -> set[str]:
    res = run(["ip", "-o", "-4", "addr", "show"], check=False)
    return {part.split("/")[0] for line in res.stdout.splitlines()
            for i, part in enumerate(line.split()) if i > 0 and line.split()[i - 1] == "inet"}

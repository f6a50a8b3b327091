"""Bring an emulated cluster up, report it, fail/repair/slow its cables, tear it down.

Python API (also what `python -m topology emulate ...` calls; see /work/coord/emu-api.md):
    up(spec, link_gbps=..., routing="ecmp", prefix="dn-") -> Plan
    status(prefix) -> dict            down(prefix) -> list of what was removed
    link(prefix, a, b, "down"|"up")   set_rate(prefix, a, b, gbps)
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from distnet.common.errors import UserError
from topology.emulate import kernel, launch, state
from topology.emulate.plan import MGMT_BLOCK, MGMT_NET, Plan, build_plan, check_prefix
from topology.network import Network
from topology.spec import parse_network

# One lock for every cluster on the machine, whatever its DISTNET_EMULATE_DIR: two `up`s at once
# would otherwise both see a slot free (neither bridge exists yet) and share its addresses.
SLOT_LOCK = Path("/run/distnet-emulate.lock")
MAX_NAMESPACES = 200  # a k=6 fat-tree (99 namespaces) is the most 2 cores can host usefully


def network_of(spec: str, link_gbps: float | None, host_gbps: float | None = None) -> Network:
    """The Network a spec describes, with the emulator's rates (Gb/s) finite and positive."""
    for name, v in (("link-gbps", link_gbps), ("host-gbps", host_gbps)):
        if v is not None and not (0.001 <= v <= 100):
            raise UserError(f"emulate: --{name} must be within 0.001..100 Gb/s, got {v}")
    net = parse_network(spec, link_gbps=link_gbps, host_gbps=host_gbps)
    if net.n_nodes > MAX_NAMESPACES:
        raise UserError(f"emulate: {net.name} needs {net.n_nodes} namespaces "
                        f"(at most {MAX_NAMESPACES} here)")
    return net


@contextlib.contextmanager
def _slot_lock() -> Iterator[None]:
    with open(SLOT_LOCK, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _free_mgmt_slot() -> int:
    """A slot no recorded cluster holds and whose bridge address no live one has taken (the
    latter also sees clusters recorded in another DISTNET_EMULATE_DIR)."""
    used = state.used_mgmt_subnets()
    addrs = {ipaddress.IPv4Address(a) for a in kernel.root_addresses()}
    for slot, block in enumerate(MGMT_NET.subnets(new_prefix=MGMT_BLOCK)):
        if str(block) not in used and not any(a in block for a in addrs):
            return slot
    raise UserError("emulate: every management subnet of 198.19.0.0/16 is in use")


def up(spec: str, link_gbps: float | None = None, routing: str = "ecmp", prefix: str = "dn-",
       host_gbps: float | None = None, slots: int = 2) -> Plan:
    """Build the cluster; on any failure remove what was made and raise."""
    check_prefix(prefix)
    if not 1 <= slots <= 1024:
        raise UserError(f"emulate up: --slots must be 1..1024, got {slots}")
    if state.state_path(prefix).exists():
        raise UserError(f"emulate: a cluster with prefix {prefix!r} is up "
                        f"(run `python -m topology emulate down --prefix {prefix}`)")
    net = network_of(spec, link_gbps, host_gbps)
    with _slot_lock():  # held until the bridge holds its address: the slot is then visibly ours
        plan = build_plan(net, spec, prefix, routing, _free_mgmt_slot())
        taken = ({n for n in plan.namespaces} & kernel.existing_namespaces()) | (
            {plan.bridge, *(h.mgmt_leg for h in plan.hosts)} & kernel.root_links())
        if taken:
            raise UserError(f"emulate: {sorted(taken)[0]} already exists; not touching it")
        state.save(plan, {"link_gbps": link_gbps, "host_gbps": host_gbps, "slots": slots})
        try:
            kernel.run_all(kernel.up_cmds(plan))
            launch.write_files(plan, slots)
        except BaseException:
            down(prefix)
            raise
    return plan


def down(prefix: str = "dn-") -> list[str]:
    """Remove every namespace and root link the state file names; then the state itself."""
    plan, _ = state.load(prefix)
    gone = []
    live = kernel.existing_namespaces()
    for ns in plan.namespaces:
        if ns in live:
            kernel.run(["ip", "netns", "del", ns])
            gone.append(ns)
    links = kernel.root_links()
    for name in [h.mgmt_leg for h in plan.hosts] + [plan.bridge]:
        if name in links:  # legs die with their namespace; these are leftovers of a crash
            kernel.run(["ip", "link", "del", name], check=False)
            gone.append(name)
    shutil.rmtree(state.work_dir(prefix), ignore_errors=True)
    state.state_path(prefix).unlink(missing_ok=True)
    return gone


def leftovers(plan: Plan) -> list[str]:
    """Names of the plan that still exist in the kernel (empty after a clean `down`)."""
    live = kernel.existing_namespaces() | kernel.root_links()
    return sorted(n for n in [*plan.namespaces, plan.bridge, *(h.mgmt_leg for h in plan.hosts)]
                  if n in live)


def status(prefix: str = "dn-") -> dict:
    plan, extra = state.load(prefix)
    live = kernel.existing_namespaces()
    return {
        "prefix": plan.prefix, "spec": plan.spec, "routing": plan.routing,
        "mgmt_subnet": plan.mgmt_subnet, "data_subnet": plan.data_subnet,
        "hostfile": str(launch.hostfile_path(prefix)), "agent": str(launch.agent_path(prefix)),
        "up": all(ns in live for ns in plan.namespaces),
        "hosts": [{"name": h.name, "namespace": h.namespace, "mgmt_ip": h.mgmt_ip,
                   "data_ip": h.data_ip, "data_ifaces": h.data_ifaces} for h in plan.hosts],
        "links": [{"a": c.a, "b": c.b, "ns_a": c.ns_a, "if_a": c.if_a, "ns_b": c.ns_b,
                   "if_b": c.if_b, "gbps": c.gbps, "up": c.index not in plan.failed}
                  for c in plan.cables],
        "slots": extra.get("slots", 2),
    }


def _reconverge(plan: Plan, failed: list[int]) -> Plan:
    """Recompute every table on the surviving cables and install it, as a routing protocol
    would after it converged (the kernel alone only drops nexthops on a downed device)."""
    net = network_of(plan.spec, *_rates(plan))
    new = build_plan(net, plan.spec, plan.prefix, plan.routing,
                     _slot_of(plan), failed)
    new = replace(new, cables=plan.cables)  # keep live rates set by set_rate
    for cmd in kernel.reroute_cmds(plan.routes, new.routes):
        # a route out of a cable just taken down left with its device (a host's only cable):
        # deleting it again is not an error
        kernel.run(cmd, check=cmd[3:5] != ["route", "del"])
    return new


def _rates(plan: Plan) -> tuple[float | None, float | None]:
    _, extra = state.load(plan.prefix)
    return extra.get("link_gbps"), extra.get("host_gbps")


def _slot_of(plan: Plan) -> int:
    block = ipaddress.IPv4Network(plan.mgmt_subnet)
    return list(MGMT_NET.subnets(new_prefix=MGMT_BLOCK)).index(block)


def link(prefix: str, a: str, b: str, action: str) -> dict:
    """Fail (`down`) or repair (`up`) the cable between nodes a and b on the live cluster."""
    if action not in ("down", "up"):
        raise UserError(f"emulate link: action must be down or up, got {action!r}")
    plan, extra = state.load(prefix)
    c = plan.cable_between(a, b)
    failed = set(plan.failed)
    if action == "down":
        kernel.run_all(kernel.link_state_cmds(c, up=False))
        failed.add(c.index)
    else:
        kernel.run_all(kernel.link_state_cmds(c, up=True))
        failed.discard(c.index)
    new = _reconverge(plan, sorted(failed))
    state.save(new, extra)
    return {"cable": [c.a, c.b], "state": action, "failed": [
        [plan.cables[i].a, plan.cables[i].b] for i in new.failed]}


def set_rate(prefix: str, a: str, b: str, gbps: float) -> dict:
    """Reshape both directions of one cable to `gbps` on the live cluster (slow a link)."""
    if not 0.001 <= gbps <= 100:
        raise UserError(f"emulate link rate: gbps must be within 0.001..100, got {gbps}")
    plan, extra = state.load(prefix)
    c = plan.cable_between(a, b)
    kernel.run_all([kernel.tbf(c.ns_a, c.if_a, gbps), kernel.tbf(c.ns_b, c.if_b, gbps)])
    plan.cables[c.index] = replace(c, gbps=float(gbps))
    state.save(plan, extra)
    return {"cable": [c.a, c.b], "gbps": gbps}

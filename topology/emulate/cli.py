"""`python -m topology emulate {up,run,status,down,link,validate}`: the emulated cluster's CLI.

Bad input is one line `topology: error: ...` and exit 2 (topology.cli.main prints it).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Sequence

from distnet.common.cli import Parser
from distnet.common.errors import UserError


def _prefix(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--prefix", default="dn-",
                    help="name prefix of everything the cluster creates (default dn-)")


def build_parser() -> argparse.ArgumentParser:
    ap = Parser(prog="topology emulate", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True, parser_class=Parser)
    u = sub.add_parser("up", help="build the namespaces, cables, shapers and routes")
    u.add_argument("--topology", default="leaf-spine:leaves=2,spines=2,hosts=2",
                   help="network spec, as the simulator takes it")
    u.add_argument("--link-gbps", type=float, default=0.2,
                   help="every tier's rate unless the spec says otherwise (default 0.2)")
    u.add_argument("--host-gbps", type=float, default=None,
                   help="rate of host cables in Gb/s (default: --link-gbps)")
    u.add_argument("--routing", default="ecmp", help="ecmp, dmodk or single")
    u.add_argument("--slots", type=int, default=2, help="slots per host in the hostfile")
    u.add_argument("--json", action="store_true", help="print the cluster as JSON")
    _prefix(u)
    r = sub.add_parser("run", help="mpirun CMD on the emulated hosts: run -n N -- CMD...")
    r.add_argument("-n", "--np", type=int, required=True, dest="n", help="ranks to start")
    r.add_argument("--placement", default="packed", help="packed, scattered or random")
    r.add_argument("--ranks-per-host", type=int, default=1,
                   help="ranks on each emulated host")
    r.add_argument("--seed", type=int, default=0, help="seed of --placement random")
    r.add_argument("--timeout", type=float, default=None, help="kill the job after S seconds")
    r.add_argument("--print-cmd", action="store_true", help="print the mpirun line, run nothing")
    r.add_argument("--shared-memory", action="store_true",
                   help="ranks of one emulated host talk through shared memory (btl "
                        "tcp,self,sm), as on a real node; not with ULFM")
    r.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command to run")
    _prefix(r)
    s = sub.add_parser("status", help="hosts and links of the live cluster")
    s.add_argument("--json", action="store_true", help="print hosts and links as JSON")
    _prefix(s)
    d = sub.add_parser("down", help="remove everything the cluster created")
    _prefix(d)
    k = sub.add_parser("link", help="link down|up A B, or link rate A B GBPS, on the live run")
    k.add_argument("action", choices=("down", "up", "rate"),
                   help="down, up, or rate (set its Gb/s)")
    k.add_argument("a", help="one end of the cable (host or switch name)")
    k.add_argument("b", help="the other end")
    k.add_argument("gbps", nargs="?", type=float, default=None, help="with rate: Gb/s")
    _prefix(k)
    v = sub.add_parser("validate", help="simulator vs measured on emulated networks")
    v.add_argument("--link-gbps", type=float, default=0.2, help="cable rate in Gb/s")
    v.add_argument("--sizes", default="256KiB,1MiB,4MiB,16MiB",
                   help="comma-separated byte sizes")
    v.add_argument("--iters", type=int, default=3, help="timed iterations per point")
    v.add_argument("--quick", action="store_true", help="one rank per host only")
    v.add_argument("--networks", default="all",
                   help="comma-separated indices into the matrix (0-3), 'all', or add 'fat-tree'")
    v.add_argument("--json", default=None, metavar="PATH", help="write the matrix as JSON")
    v.add_argument("--plot", default=None, metavar="PATH.png",
                   help="write measured vs simulated plot")
    v.add_argument("--prefix", default="dv-",
                   help="name prefix of the clusters validate builds")
    v.add_argument("--merge", default=None, metavar="A.json,B.json",
                   help="report on earlier --json files instead of measuring")
    v.add_argument("--calibration", default=None, metavar="PATH",
                   help="reuse this calibration (JSON); written here when it does not exist")
    v.add_argument("--collision-draws", type=int, default=0, metavar="K",
                   help="instead of the matrix: one packed and K scattered 4-rank rings on "
                        "leaf-spine 1:1, each its own mpirun (own ports, own ECMP hash draw); "
                        "needs --calibration")
    return ap


def _networks(text: str) -> tuple:
    from topology.emulate.validate import FAT_TREE, NETWORKS

    out = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        if part == "all":
            out += list(NETWORKS)
        elif part == "fat-tree":
            out.append(FAT_TREE)
        elif part.isdigit() and int(part) < len(NETWORKS):
            out.append(NETWORKS[int(part)])
        else:
            raise UserError(f"--networks: {part!r} is not all, fat-tree or 0..{len(NETWORKS) - 1}")
    if not out:
        raise UserError("--networks: empty")
    return tuple(out)


def _validate(a: argparse.Namespace) -> int:
    from distnet.common.units import human_bytes, parse_size
    from topology.emulate import validate as val

    if not 0.001 <= a.link_gbps <= 10 or not 1 <= a.iters <= 100:
        raise UserError("--link-gbps must be 0.001..10 and --iters 1..100")
    sizes = [parse_size(s) for s in a.sizes.split(",") if s.strip()]
    if not sizes or any(not 1024 <= s <= 256 << 20 for s in sizes):
        raise UserError("--sizes: each within 1 KiB..256 MiB")
    import os

    cal = None
    if a.collision_draws:
        if not 1 <= a.collision_draws <= 50 or not a.calibration:
            raise UserError("--collision-draws must be 1..50 and needs an existing --calibration")
        res = val.collision_draws(a.link_gbps, val.load_calibration(a.calibration), max(sizes),
                                  a.iters, a.collision_draws, a.prefix)
        for d in res["draws"]:
            print(f"run {d['run']:>2} {d['placement']:<9} {human_bytes(d['bytes'])} measured "
                  f"{d['measured_s'] * 1e3:.1f} ms simulated {d['simulated_s'] * 1e3:.1f} ms"
                  f"{'  collided' if d['collided'] else ''}")
        print(f"{res['collided']} of {res['of']} scattered runs collided")
        r = res.get("ratio")
        if r:
            print(f"{r['what']}: measured x{r['measured_ratio']:.2f}, simulated "
                  f"x{r['simulated_ratio']:.2f} ({r['error'] * 100:+.1f} %)")
        if a.json:
            with open(a.json, "w", encoding="utf-8") as fh:
                json.dump(res, fh, indent=1)
        return 0
    if a.merge:
        parts = []
        for path in (p.strip() for p in a.merge.split(",") if p.strip()):
            try:
                with open(path, encoding="utf-8") as fh:
                    parts.append(json.load(fh))
            except (OSError, ValueError) as exc:
                raise UserError(f"--merge: cannot read {path} ({exc})") from None
        out = val.merge(parts)
    else:
        if a.calibration and os.path.exists(a.calibration):
            cal = val.load_calibration(a.calibration)
        out = val.validate(a.link_gbps, sizes, a.iters, _networks(a.networks), a.prefix,
                           a.quick, cal)
    if a.calibration and cal is None and not a.merge:
        with open(a.calibration, "w", encoding="utf-8") as fh:
            json.dump(out["calibration"], fh, indent=1)
    print(val.table_text(out["rows"]))
    cal = out["calibration"]
    print(f"calibration: alpha {cal['alpha_s'] * 1e3:.2f} ms, link efficiency "
          f"{cal['efficiency']:.3f}, wire bytes / payload {cal['wire_overhead']:.3f}")
    s = out["summary"]
    print(f"points >= 1 MiB: {s['points_ge_1MiB']}, median |error| "
          f"{s['median_abs_error'] * 100:.1f} %, max {s['max_abs_error'] * 100:.1f} %, "
          f"{s['within_25pct']} within 25 %")
    print(f"per-link bytes: {s['links_checked']} links, median |error| "
          f"{s['link_median_abs_error'] * 100:.1f} %, max {s['link_max_abs_error'] * 100:.1f} %,"
          f" {s['links_within_5pct']} within 5 %")
    for r in out["ratios"]:
        print(f"{r['what']}: measured x{r['measured_ratio']:.2f}, simulated "
              f"x{r['simulated_ratio']:.2f} ({r['error'] * 100:+.1f} %)")
    if a.json:
        with open(a.json, "w", encoding="utf-8") as fh:
            json.dump(out, fh, indent=1)
    if a.plot and out["rows"]:
        val.plot(a.plot, out["rows"])
    return 0


def _status_text(st: dict) -> str:
    lines = [f"{st['spec']}  routing {st['routing']}  prefix {st['prefix']}  "
             f"{'up' if st['up'] else 'NOT fully up'}",
             f"hostfile {st['hostfile']}  agent {st['agent']}"]
    lines += [f"  {h['name']:<6} {h['namespace']:<12} mgmt {h['mgmt_ip']:<15} data "
              f"{h['data_ip']}" for h in st["hosts"]]
    lines += [f"  {c['a']:>8} -- {c['b']:<8} {c['gbps']:g} Gb/s"
              f"{'' if c['up'] else '  DOWN'}" for c in st["links"]]
    return "\n".join(lines)


def run(argv: Sequence[str]) -> int:
    from topology.emulate import cluster, launch, state

    a = build_parser().parse_args(list(argv))
    if a.cmd == "up":
        plan = cluster.up(a.topology, a.link_gbps, a.routing, a.prefix, a.host_gbps, a.slots)
        st = cluster.status(plan.prefix)
        print(json.dumps(st, indent=1) if a.json else _status_text(st))
    elif a.cmd == "status":
        st = cluster.status(a.prefix)
        print(json.dumps(st, indent=1) if a.json else _status_text(st))
    elif a.cmd == "down":
        gone = cluster.down(a.prefix)
        print(f"removed {len(gone)} namespaces/links of {a.prefix!r}")
    elif a.cmd == "validate":
        return _validate(a)
    elif a.cmd == "link":
        if a.action == "rate":
            if a.gbps is None:
                raise UserError("emulate link rate A B GBPS: give the rate")
            print(json.dumps(cluster.set_rate(a.prefix, a.a, a.b, a.gbps)))
        else:
            print(json.dumps(cluster.link(a.prefix, a.a, a.b, a.action)))
    else:
        command = list(a.command)
        if command and command[0] == "--":
            command = command[1:]
        plan, _ = state.load(a.prefix)
        btl = "tcp,self,sm" if a.shared_memory else "tcp,self"
        cmd = launch.mpirun_cmd(plan, a.n, command, a.placement, a.ranks_per_host, a.seed,
                                btl=btl)
        if a.print_cmd:
            print(" ".join(cmd))
            return 0
        if a.timeout is not None and not 0 < a.timeout <= 7 * 86400:
            raise UserError(f"--timeout must be within 0..604800 s, got {a.timeout}")
        # SIGTERM (e.g. from `timeout`) must reach the finally that kills mpirun's group
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        res = launch.run(plan, a.n, command, timeout_s=a.timeout, capture=False,
                         placement=a.placement, ranks_per_host=a.ranks_per_host, seed=a.seed,
                         btl=btl)
        if res.timed_out:
            print(f"topology: error: emulate run: killed after {a.timeout} s", file=sys.stderr)
            return 124
        return res.returncode
    return 0

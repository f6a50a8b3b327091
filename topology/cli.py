"""`python -m topology {simulate,compare,info,scaling,calibrate,bench,emulate}`: the CLI.

Bad input of any kind is one line on stderr, `topology: error: ...`, and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from distnet.common.cli import Parser, run_cli
from distnet.common.errors import UserError
from distnet.common.jsonfile import finite
from distnet.common.plotting import pyplot, save_figure
from distnet.common.units import human_bytes, parse_size
from topology import sim


@dataclass(frozen=True)
class Case:
    topology: str
    algorithm: str
    size_bytes: int
    hosts: int | None = None
    placement: str = "packed"
    routing: str = "ecmp"
    seed: int = 0
    link_gbps: float | None = None
    link_latency_us: float | None = None
    fail_links: int = 0
    alpha_us: float | None = None
    gamma_ns_per_byte: float | None = None
    engine: str = "auto"


def check_case(c: Case) -> None:
    """Every number of a case finite and in range before it reaches the simulator (a NaN
    latency once made its event loop spin forever)."""
    for flag, value, lo, hi in (("--link-gbps", c.link_gbps, 1e-9, 1e9),
                                ("--link-latency-us", c.link_latency_us, 0.0, 1e6),
                                ("--alpha-us", c.alpha_us, 0.0, 1e6),
                                ("--gamma-ns-per-byte", c.gamma_ns_per_byte, 0.0, 1e6)):
        if value is not None:
            finite(value, flag, lo, hi)
    if not 0 <= c.seed < 2**63:
        raise UserError(f"--seed must be in 0..2^63-1, got {c.seed}")
    if c.fail_links < 0:
        raise UserError(f"--fail-links must be >= 0, got {c.fail_links}")


def run_case(c: Case) -> dict[str, Any]:
    """Build, place, simulate and compare with the closed form; plain data out."""
    from distnet.allreduce.cost import cost_s
    from topology.network import fail_random
    from topology.routing import MODES, route
    from topology.sim import simulate_allreduce
    from topology.spec import parse_network

    if c.routing not in MODES:
        raise UserError(f"unknown routing {c.routing!r} (known: {', '.join(MODES)})")
    check_case(c)
    net = parse_network(
        c.topology, link_gbps=c.link_gbps,
        link_latency_s=None if c.link_latency_us is None else c.link_latency_us * 1e-6)
    if c.fail_links:
        net = fail_random(net, c.fail_links, seed=c.seed)
    p = net.n_hosts if c.hosts is None else c.hosts
    if p < 1:
        raise UserError(f"--hosts must be >= 1, got {p}")
    itemsize = 4
    run = simulate_allreduce(
        net, c.algorithm, p, c.size_bytes, itemsize, placement=c.placement, routing=c.routing,
        seed=c.seed, alpha_s=None if c.alpha_us is None else c.alpha_us * 1e-6,
        gamma_s_per_byte=None if c.gamma_ns_per_byte is None else c.gamma_ns_per_byte * 1e-9,
        engine=c.engine)
    res, sched, hosts = run.result, run.schedule, run.hosts
    src, dst = _sample_pairs(sched)
    worst_lat = float(route(net, hosts[src], hosts[dst], mode=c.routing,
                            seed=c.seed).latency_s.max()) if src.size else 0.0
    nic_gbps = float(net.link_gbps[net.tier[net.link_u] == 0].min())
    cf_opts: dict[str, float] = {}
    if run.node_of is not None:
        cf_opts["ranks_per_node"] = max(1, p // max(1, len(set(run.node_of))))
    alpha_s = sim.ALPHA_S if c.alpha_us is None else c.alpha_us * 1e-6
    gamma = sim.GAMMA_S_PER_BYTE if c.gamma_ns_per_byte is None else c.gamma_ns_per_byte * 1e-9
    try:
        closed = cost_s(c.algorithm, p, run.nbytes, alpha_s, 8 / (nic_gbps * 1e9), gamma,
                        worst_lat, **cf_opts)
    except UserError:
        closed = float("nan")
    return {
        "topology": c.topology, "network": net.name, "hosts": p, "algorithm": c.algorithm,
        "bytes": run.nbytes, "placement": c.placement, "routing": c.routing, "seed": c.seed,
        "failed_links": c.fail_links, "engine": res.engine, "engine_note": res.engine_note,
        "steps": sched.nsteps,
        "time_s": res.time_s, "algbw_gbps": res.algbw_gbps, "busbw_gbps": res.busbw_gbps,
        "closed_form_s": closed, "worst_path_latency_s": worst_lat,
        "max_link_util": res.max_link_util, "busiest_links": res.busiest,
        "step_end_s": res.step_end_s.tolist(),
    }


def _sample_pairs(sched: Any, limit: int = 200_000) -> tuple[np.ndarray, np.ndarray]:
    """(src, dst) ranks of every transfer, or of the first steps when there are too many."""
    src, dst, total = [], [], 0
    for s in range(sched.nsteps):
        st = sched.step(s)
        src.append(st.src)
        dst.append(st.dst)
        total += len(st)
        if total >= limit and s >= 1:
            break
    if not src:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(src), np.concatenate(dst)


def format_result(r: dict[str, Any]) -> str:
    lines = [
        f"{r['algorithm']} all-reduce of {human_bytes(r['bytes'])} on {r['hosts']} hosts of "
        f"{r['network']} ({r['placement']} placement, {r['routing']} routing, seed {r['seed']}, "
        f"{r['steps']} steps, {r['engine']} engine)",
        f"engine         {r['engine_note']}",
        f"time           {r['time_s'] * 1e3:.4f} ms",
        f"algbw / busbw  {r['algbw_gbps']:.1f} / {r['busbw_gbps']:.1f} Gb/s",
        f"closed form    {r['closed_form_s'] * 1e3:.4f} ms (worst path latency "
        f"{r['worst_path_latency_s'] * 1e6:.2f} us); sim/closed = "
        f"{r['time_s'] / r['closed_form_s']:.3f}",
        f"max link util  {r['max_link_util']:.3f} (bytes carried / capacity x time)",
        "busiest links",
    ]
    lines += [f"  {name}  {u:.3f}" for name, u in r["busiest_links"]]
    return "\n".join(lines)


def compare_table(rows: list[dict[str, Any]]) -> str:
    def topo(r: dict[str, Any]) -> str:
        return r["topology"] + (f" -{r['failed_links']}links" if r["failed_links"] else "")

    w = max([8, *(len(topo(r)) for r in rows)])
    head = (f"{'topology':<{w}} {'place':<9} {'route':<5} {'algorithm':<18} {'size':>7} "
            f"{'time_ms':>10} {'busbw':>7} {'closed_ms':>10} {'maxutil':>7}")
    out = [head, "-" * len(head)]
    for r in rows:
        out.append(f"{topo(r):<{w}} {r['placement']:<9} {r['routing']:<5} {r['algorithm']:<18} "
                   f"{human_bytes(r['bytes']):>7} {r['time_s'] * 1e3:>10.4f} "
                   f"{r['busbw_gbps']:>7.1f} {r['closed_form_s'] * 1e3:>10.4f} "
                   f"{r['max_link_util']:>7.3f}")
    return "\n".join(out)


def plot_steps(path: str, r: dict[str, Any]) -> None:
    """Completion time of every step: the slope is the time per step, kinks are slow steps."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    ends = np.asarray(r["step_end_s"]) * 1e3
    ax.plot(np.arange(ends.size), ends)
    ax.set_xlabel("step")
    ax.set_ylabel("step completes at (ms)")
    ax.set_title(f"{r['algorithm']} {human_bytes(r['bytes'])} on {r['network']}, "
                 f"{r['placement']}/{r['routing']}")
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def plot_compare(path: str, rows: list[dict[str, Any]]) -> None:
    """busbw against size: colour per algorithm, line style per (topology, placement, routing)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    series: dict[tuple, list[tuple[int, float]]] = {}
    for r in rows:
        key = (r["topology"] + (f" -{r['failed_links']} links" if r["failed_links"] else ""),
               r["placement"], r["routing"], r["algorithm"])
        series.setdefault(key, []).append((r["bytes"], r["busbw_gbps"]))
    algorithms = sorted({k[3] for k in series})
    variants = sorted({k[:3] for k in series})
    styles = ["-", "--", ":", "-."]
    for key, pts in series.items():
        pts.sort()
        color = f"C{algorithms.index(key[3]) % 10}"
        style = styles[variants.index(key[:3]) % len(styles)]
        ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", color=color,
                linestyle=style, label=" ".join(key))
    ax.set_xscale("log", base=2)
    ax.set_xlabel("buffer (bytes)")
    ax.set_ylabel("busbw (Gb/s)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def _common(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--hosts", type=int, default=None, help="ranks, one per host (default: all)")
    sp.add_argument("--seed", type=int, default=0,
                    help="seed of ECMP hashing, random placement and link failures")
    sp.add_argument("--link-gbps", type=float, default=None,
                    help="override every cable's bandwidth in Gb/s (default: the spec's)")
    sp.add_argument("--link-latency-us", type=float, default=None,
                    help="override every cable's latency in microseconds (default: the "
                         "spec's)")
    sp.add_argument("--fail-links", type=int, default=0, help="fail N random switch cables")
    sp.add_argument("--alpha-us", type=float, default=None, help="per-message overhead")
    sp.add_argument("--gamma-ns-per-byte", type=float, default=None, help="reduction cost")
    sp.add_argument("--engine", choices=list(sim.ENGINES), default="auto",
                    help="auto (default): fast where proved exact, else exact; exact: one "
                         "event loop; fast: step by step; reference: the original exact loop")
    sp.add_argument("--json", action="store_true", help="print JSON instead of text")
    sp.add_argument("--plot", default=None, metavar="PATH.png",
                    help="write a plot of the result here")


def build_parser() -> argparse.ArgumentParser:
    ap = Parser(prog="topology", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True, parser_class=Parser)
    s = sub.add_parser("simulate", help="one all-reduce on one network")
    s.add_argument("--topology", default="fat-tree:k=8",
                   help="network spec: fat-tree:k=K, leaf-spine:leaves=L,spines=S,hosts=H, "
                        "clos:..., or a custom JSON file (`topology info` explains one)")
    s.add_argument("--algorithm", default="ring",
                   help="all-reduce algorithm whose schedule is replayed")
    s.add_argument("--size", default="64MiB", help="bytes reduced, e.g. 4KiB, 64MiB")
    s.add_argument("--routing", default="ecmp",
                   help="ecmp (per-flow hash), ideal (perfect spreading) or dmodk")
    s.add_argument("--placement", default="packed",
                   help="ranks on hosts: packed, scattered or random")
    _common(s)
    c = sub.add_parser("compare", help="algorithms x topologies x sizes x variants")
    c.add_argument("--topology", action="append", default=None,
                   help="network spec as for simulate; repeatable (default: fat-tree:k=8)")
    c.add_argument("--algorithms", default="ring,tree,recursive_doubling,rabenseifner",
                   help="comma-separated all-reduce algorithms")
    c.add_argument("--sizes", default="1MiB,64MiB", help="comma-separated byte sizes")
    c.add_argument("--routings", default="ecmp",
                   help="comma-separated routings: ecmp, ideal, dmodk")
    c.add_argument("--placements", default="packed",
                   help="comma-separated placements: packed, scattered, random")
    _common(c)
    i = sub.add_parser("info", help="counts, oversubscription, bisection, paths")
    i.add_argument("spec", help="network spec, e.g. fat-tree:k=4, or a custom JSON file")
    sub.add_parser("scaling", help="2-tier leaf-spine vs 3-tier fat-tree host counts")
    k = sub.add_parser("calibrate", help="fit alpha, beta, gamma to a distnet.bench --json file")
    k.add_argument("file", help="a `python -m distnet.bench --json` result")
    k.add_argument("--stat", default="avg_s", help="avg_s, median_s or min_s (least noisy)")
    k.add_argument("--model", default="machine", choices=("simple", "machine"),
                   help="simple: one alpha, beta, gamma; machine: cores, cache/DRAM bus, "
                        "rendezvous (docs/topology-sim.md)")
    k.add_argument("--cores", type=int, default=None,
                   help="cores of the measured machine for --model machine (default: this one)")
    sub.add_parser("emulate", help="the modelled cluster on Linux namespaces (emulate -h)",
                   add_help=False)
    b = sub.add_parser("bench", help="simulator speed: the exact engine's targets "
                                     "(docs/topology-sim.md)")
    b.add_argument("--max-hosts", type=int, default=27648,
                   help="skip the cases with more hosts than this (default: run all, 128 to "
                        "27,648 hosts)")
    b.add_argument("--algorithms", default=None,
                   help="comma-separated: only these algorithms' cases (default: all)")
    b.add_argument("--k", default=None,
                   help="comma-separated fat-tree radixes: instead of the cases, a packed "
                        "256 MiB ring on every host of each (the fast engine's scale)")
    return ap


def _case_kwargs(a: argparse.Namespace) -> dict[str, Any]:
    return dict(hosts=a.hosts, seed=a.seed, link_gbps=a.link_gbps,
                link_latency_us=a.link_latency_us, fail_links=a.fail_links,
                alpha_us=a.alpha_us, gamma_ns_per_byte=a.gamma_ns_per_byte, engine=a.engine)


def _split(text: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise UserError(f"empty list {text!r}")
    return items


def run(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["emulate"]:  # its own parser: `run` takes a command after --
        from topology.emulate.cli import run as run_emulate

        return run_emulate(argv[1:])
    a = build_parser().parse_args(argv)
    if a.cmd == "simulate":
        r = run_case(Case(a.topology, a.algorithm, parse_size(a.size), placement=a.placement,
                          routing=a.routing, **_case_kwargs(a)))
        if a.plot:
            plot_steps(a.plot, r)
        if a.json:
            print(json.dumps(r, indent=1))
        else:
            print(format_result(r))
    elif a.cmd == "compare":
        rows = [run_case(Case(t, alg, size, placement=pl, routing=ro, **_case_kwargs(a)))
                for t in (a.topology or ["fat-tree:k=8"])
                for pl in _split(a.placements) for ro in _split(a.routings)
                for alg in _split(a.algorithms) for size in map(parse_size, _split(a.sizes))]
        if a.plot:
            plot_compare(a.plot, rows)
        if a.json:
            print(json.dumps([{k: v for k, v in r.items() if k != "step_end_s"} for r in rows],
                             indent=1))
        else:
            print(compare_table(rows))
    elif a.cmd == "info":
        from topology.report import info_text
        from topology.spec import parse_network

        print(info_text(parse_network(a.spec)))
    elif a.cmd == "scaling":
        from topology.report import scaling_table, scaling_text

        print(scaling_text(scaling_table()))
    elif a.cmd == "calibrate":
        from topology import calibrate as cal

        records = cal.load_records(a.file, a.stat)
        if a.model == "machine":
            mf = cal.fit_machine(records, a.cores)
            print(cal.machine_report(mf, cal.machine_sim_vs_measured(mf)))
        else:
            f = cal.fit(records)
            print(cal.report(f, cal.sim_vs_measured(f)))
    else:
        from topology import speed

        if a.k is not None:
            cases: list[speed.Case] = []
            for t in _split(a.k):
                if not t.isdigit():
                    raise UserError(f"--k: {t!r} is not a radix")
                k = int(t)
                cases.append(("ring", k**3 // 4, k, "packed", 256 * speed.MIB, None))
        else:
            wanted = None if a.algorithms is None else set(_split(a.algorithms))
            cases = [c for c in speed.CASES if c[1] <= a.max_hosts
                     and (wanted is None or c[0] in wanted)]
        print(speed.HEAD, flush=True)
        for alg, hosts, k, placement, nbytes, target in cases:
            print(speed.bench_line(speed.bench_case(alg, hosts, k, placement, nbytes, target)),
                  flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli("topology", lambda: run(argv))

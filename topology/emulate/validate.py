"""`emulate validate`: the simulator against the emulated network, after one calibration.

1. calibrate: ranks ping-pong 4 KiB and 1-8 MiB in pairs on the hosts of one leaf (all 4 ranks
   at once, so the probe pays the same CPU share as a 4-rank collective on 2 cores); the 4 KiB
   one-way time is the per-message overhead alpha, and the slope of t - alpha = 8 bytes /
   (eff * rate) over the MiB sizes the achieved link efficiency eff; the bytes the kernel
   counted on host 0's cable over the payload give the wire overhead (headers) for the
   per-link byte check. The stack runs with launch.STACK_FLAGS (why in launch.py): with Open
   MPI's defaults an exchange on one TCP connection was serialised in about half of the runs
   (8 MiB: 0.35 s or 0.70 s at 0.2 Gb/s), a bimodal race no single efficiency describes.
2. measure: for every network of the matrix, bring it up, run `distnet.bench emulated` for each
   placement (all algorithms, all sizes in one mpirun), read back every MPI TCP connection's path
   (paths.py) and each link's byte counter.
3. simulate: topology.sim.simulate on the spec's network with every rate x eff, alpha from the
   probe, each transfer on the path its connection really took; report |sim - measured| /
   measured. `native` is Open MPI's allreduce pinned to its ring (tuned algorithm 4), simulated
   with the ring schedule.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from distnet.common.errors import UserError
from distnet.common.progress import bar
from distnet.common.units import human_bytes
from topology.emulate import cluster, launch, paths, state
from topology.emulate.plan import Plan

NATIVE_RING = "--mca coll_tuned_use_dynamic_rules 1 --mca coll_tuned_allreduce_algorithm 4"
ALGORITHMS = ("ring", "tree", "rabenseifner", "naive", "native")
LS = "leaf-spine:leaves=2,spines=2,hosts=2"


@dataclass(frozen=True)
class Net:
    label: str
    spec: str
    routing: str = "ecmp"
    fail: tuple[str, str] | None = None


NETWORKS = (
    Net("leaf-spine 1:1 ecmp", LS),
    Net("leaf-spine 2:1 ecmp", LS + ",oversub=2"),
    Net("leaf-spine 1:1 single-path", LS, "single"),
    Net("leaf-spine 1:1 ecmp, leaf0-spine0 failed", LS, "ecmp", ("leaf0", "spine0")),
)
FAT_TREE = Net("fat-tree k=4 ecmp", "fat-tree:k=4")


@dataclass(frozen=True)
class Calibration:
    alpha_s: float
    efficiency: float
    wire_overhead: float  # bytes on the cable / payload bytes
    rate_gbps: float


def _bench(plan: Plan, n: int, args: list[str], placement: str = "packed", rph: int = 1,
           extra: str = "", timeout_s: float = 600) -> dict[str, Any]:
    """One `distnet.bench emulated` run; with several ranks per host they share memory, as on a
    real node (over loopback TCP, the intra-node phase costs the 2 cores' CPU instead)."""
    import sys

    with tempfile.TemporaryDirectory(prefix="dn-validate-") as tmp:
        out = Path(tmp) / "out.json"
        res = launch.run(plan, n, [sys.executable, "-m", "distnet.bench", "emulated", *args,
                                   "--out", str(out)], timeout_s=timeout_s, placement=placement,
                         ranks_per_host=rph, extra_flags=extra,
                         btl="tcp,self,sm" if rph > 1 else "tcp,self")
        if res.timed_out or res.returncode or not out.exists():
            tail = (res.stderr or res.stdout)[-1500:]
            raise UserError(f"emulate validate: benchmark failed (rc {res.returncode}"
                            f"{', timed out' if res.timed_out else ''}): {tail}")
        return json.loads(out.read_text())


SMALL_PROBE = 4 << 10  # one eager message, well inside the shaper's burst: time = overhead


def calibrate(plan: Plan, rate_gbps: float, iters: int = 4) -> Calibration:
    sizes = [SMALL_PROBE, 1 << 20, 2 << 20, 4 << 20, 8 << 20]
    before = paths.tx_bytes(plan)
    data = _bench(plan, 4, ["--probe", "--sizes", ",".join(map(str, sizes)), "--iters",
                            str(iters)])
    wire = paths.tx_bytes(plan) - before
    b = np.array([r["bytes"] for r in data["results"]], dtype=float)
    t = np.array([r["median_s"] for r in data["results"]])
    # alpha from the small message alone: a line through the MiB points puts the shaper's
    # burst (its first 128 KiB pass at veth speed) and any handshake cost into the intercept,
    # which then fits no message size but those (last session: 11 ms, 0.1 MB gradients +67 %)
    alpha = float(t[0])
    big = b >= 1 << 20
    inv = float(np.sum(8 * b[big] * (t[big] - alpha)) / np.sum((8 * b[big]) ** 2))
    eff = 1.0 / (inv * rate_gbps * 1e9) if inv > 0 else float("nan")
    if not (0.05 < eff <= 1.5) or not np.isfinite(alpha):
        raise UserError(f"emulate validate: calibration failed (efficiency {eff:.3f}); "
                        "the machine may be too loaded")
    payload = float(np.sum(b)) * (iters + 1)  # link 0 carries the pings; pongs come back
    host0 = plan.cables[0]  # host 0's cable: link 0 is host 0 -> its leaf
    overhead = float(wire[2 * host0.index]) / payload
    return Calibration(max(0.0, alpha), float(eff), overhead, rate_gbps)


def simulate_point(spec: str, cal: Calibration, algorithm: str, nbytes: int, hosts: list[int],
                   table: dict[tuple[int, int], list[int]]) -> tuple[float, np.ndarray]:
    """Simulated time and per-link bytes of one all-reduce on the measured paths."""
    from distnet.allreduce import get_schedule
    from topology import sim
    from topology.spec import parse_network

    net = parse_network(spec, link_gbps=cal.rate_gbps * cal.efficiency)
    name = "ring" if algorithm == "native" else algorithm
    # node ids as the MPI run labels them (node_map: a node's smallest rank), not host numbers:
    # the leaders' ring follows the sorted ids, so host numbers would simulate another ring
    first: dict[int, int] = {}
    node_of = [first.setdefault(h, r) for r, h in enumerate(hosts)]
    opts = {"node_of": node_of} if algorithm == "hierarchical" else {}
    sched = get_schedule(name)(len(hosts), nbytes // 4, **opts)
    res = sim.simulate(net, sched, np.asarray(hosts), alpha_s=cal.alpha_s, memoise=False,
                       route_fn=paths.pinned_routes(net, table))
    link_bytes = res.link_util * net.link_gbps * (1e9 / 8) * res.time_s
    return float(res.time_s), link_bytes


def _runs(quick: bool) -> list[tuple[str, int, int]]:
    """(placement, ranks, ranks per host) of every mpirun on one network."""
    runs = [("packed", 4, 1), ("scattered", 4, 1)]
    return runs if quick else [*runs, ("packed", 8, 2), ("scattered", 8, 2)]


def measure_network(nw: Net, rate_gbps: float, cal: Calibration | None, sizes: list[int],
                    iters: int, prefix: str, quick: bool = False, progress: Any = None,
                    ) -> tuple[Calibration, list[dict[str, Any]], list[dict[str, Any]]]:
    """Points and per-link byte checks of one network (calibrating first when cal is None)."""
    cluster.up(nw.spec, rate_gbps, nw.routing, prefix)
    rows: list[dict[str, Any]] = []
    links: list[dict[str, Any]] = []
    try:
        plan, _ = state.load(prefix)
        if cal is None:
            cal = calibrate(plan, rate_gbps)
        if nw.fail:
            cluster.link(prefix, nw.fail[0], nw.fail[1], "down")
            plan, _ = state.load(prefix)
        for placement, n, rph in _runs(quick):
            if progress is not None:
                progress.set_postfix_str(f"{nw.label} {placement} n={n}")
            algs = ["hierarchical"] if rph > 1 else list(ALGORITHMS)
            args = ["--algorithms", ",".join(a for a in algs if a != "native"), "--sizes",
                    ",".join(map(str, sizes)), "--iters", str(iters)]
            hosts = launch.rank_hosts(plan, n, placement, rph)
            before = paths.tx_bytes(plan)
            data = _bench(plan, n, args, placement, rph)
            wire = paths.tx_bytes(plan) - before
            table = paths.connection_paths(plan, data["connections"])
            results = [(r, table) for r in data["results"]]
            if "native" in algs:
                nat = _bench(plan, n, ["--algorithms", "native", "--sizes",
                                       ",".join(map(str, sizes)), "--iters", str(iters)],
                             placement, rph, NATIVE_RING)
                nat_table = paths.connection_paths(plan, nat["connections"])
                results += [(r, nat_table) for r in nat["results"]]
            sim_bytes = np.zeros_like(wire)
            for r, run_table in results:
                t_sim, lb = simulate_point(nw.spec, cal, r["algorithm"], r["bytes"], hosts,
                                           run_table)
                if r["algorithm"] != "native":
                    sim_bytes += lb * (iters + 1)
                rows.append({"network": nw.label, "routing": nw.routing, "placement": placement,
                             "ranks": n, "algorithm": r["algorithm"], "bytes": r["bytes"],
                             "measured_s": r["median_s"], "simulated_s": t_sim,
                             "error": t_sim / r["median_s"] - 1.0})
            links += _link_check(nw.label, placement, plan, wire, sim_bytes, cal)
            if progress is not None:
                progress.update()
    finally:
        cluster.down(prefix)
    return cal, rows, links


def collision_draws(rate_gbps: float, cal: Calibration, size: int, iters: int, draws: int,
                    prefix: str) -> dict[str, Any]:
    """ECMP collisions measured, not waited for: on leaf-spine 1:1, one packed ring (no flow
    choice between the leaves) and `draws` scattered rings, each its own mpirun, so its own
    ephemeral ports and so its own draw of the kernel's 5-tuple hash. Each scattered run is
    simulated on the paths its connections took; the slowdown is over the runs whose paths
    put two flows on one uplink (the simulator's replay says which), against packed."""
    nw = NETWORKS[0]
    cluster.up(nw.spec, rate_gbps, nw.routing, prefix)
    out: list[dict[str, Any]] = []
    try:
        plan, _ = state.load(prefix)
        args = ["--algorithms", "ring", "--sizes", str(size), "--iters", str(iters)]
        for k, placement in enumerate(["packed"] + ["scattered"] * draws):
            data = _bench(plan, 4, args, placement)
            table = paths.connection_paths(plan, data["connections"])
            hosts = launch.rank_hosts(plan, 4, placement)
            r = data["results"][0]
            t_sim, _ = simulate_point(nw.spec, cal, "ring", r["bytes"], hosts, table)
            # a collision: two of the ring's flows (rank r -> r + 1) on one directed link
            used = [link for rank in range(4)
                    for link in table.get((hosts[rank], hosts[(rank + 1) % 4]), [])]
            shared = len(used) != len(set(used))
            out.append({"run": k, "placement": placement, "bytes": r["bytes"],
                        "measured_s": r["median_s"], "simulated_s": t_sim, "collided": shared})
    finally:
        cluster.down(prefix)
    base = out[0]
    hit = [d for d in out[1:] if d["collided"]]
    res: dict[str, Any] = {"draws": out, "collided": len(hit), "of": draws}
    if hit:
        mr = float(np.median([d["measured_s"] for d in hit])) / base["measured_s"]
        sr = float(np.median([d["simulated_s"] for d in hit])) / base["simulated_s"]
        res["ratio"] = {"what": "ECMP collision (scattered runs that collided) vs packed, 1:1",
                        "bytes": size, "measured_ratio": mr, "simulated_ratio": sr,
                        "error": sr / mr - 1.0}
    return res


def _link_check(label: str, placement: str, plan: Plan, wire: np.ndarray,
                sim_bytes: np.ndarray, cal: Calibration) -> list[dict[str, Any]]:
    out = []
    big = sim_bytes > 0.05 * sim_bytes.max()
    for link in np.flatnonzero(big).tolist():
        c = plan.cables[link // 2]
        a, b = (c.a, c.b) if link % 2 == 0 else (c.b, c.a)
        expect = sim_bytes[link] * cal.wire_overhead
        out.append({"network": label, "placement": placement, "link": f"{a}->{b}",
                    "measured_bytes": float(wire[link]), "simulated_bytes": float(expect),
                    "error": float(wire[link]) / float(expect) - 1.0})
    return out


def summary(rows: list[dict[str, Any]], links: list[dict[str, Any]]) -> dict[str, Any]:
    big = [abs(r["error"]) for r in rows if r["bytes"] >= 1 << 20]
    lk = [abs(r["error"]) for r in links]
    return {"points_ge_1MiB": len(big),
            "median_abs_error": float(np.median(big)) if big else float("nan"),
            "max_abs_error": float(max(big)) if big else float("nan"),
            "within_25pct": int(sum(e <= 0.25 for e in big)),
            "links_checked": len(lk),
            "link_median_abs_error": float(np.median(lk)) if lk else float("nan"),
            "link_max_abs_error": float(max(lk)) if lk else float("nan"),
            "links_within_5pct": int(sum(e <= 0.05 for e in lk))}


def ratios(rows: list[dict[str, Any]], size: int) -> list[dict[str, Any]]:
    """Seed 004's slowdowns, measured and simulated: ECMP/placement and oversubscription."""
    def t(net: str, pl: str, kind: str, alg: str = "ring") -> float | None:
        for r in rows:
            if (r["network"], r["placement"], r["algorithm"], r["bytes"], r["ranks"]) == (
                    net, pl, alg, size, 4):
                return r[kind]
        return None

    out = []
    pairs = [("scattered vs packed (ECMP collisions), 1:1", ("leaf-spine 1:1 ecmp", "scattered"),
              ("leaf-spine 1:1 ecmp", "packed")),
             ("oversubscription 2:1 vs 1:1, packed (one flow each way between the leaves)",
              ("leaf-spine 2:1 ecmp", "packed"), ("leaf-spine 1:1 ecmp", "packed")),
             ("oversubscription 2:1 vs 1:1, scattered", ("leaf-spine 2:1 ecmp", "scattered"),
              ("leaf-spine 1:1 ecmp", "scattered")),
             ("single path vs ECMP, scattered", ("leaf-spine 1:1 single-path", "scattered"),
              ("leaf-spine 1:1 ecmp", "scattered")),
             ("failed uplink vs intact, scattered",
              ("leaf-spine 1:1 ecmp, leaf0-spine0 failed", "scattered"),
              ("leaf-spine 1:1 ecmp", "scattered")),
             ("fat-tree k=4: across pods (3 tiers) vs one pod (2 tiers)",
              (FAT_TREE.label, "scattered"), (FAT_TREE.label, "packed"))]
    for name, num, den in pairs:
        m = [t(*num, "measured_s"), t(*den, "measured_s")]
        s = [t(*num, "simulated_s"), t(*den, "simulated_s")]
        if None in m or None in s:
            continue
        mr, sr = m[0] / m[1], s[0] / s[1]  # type: ignore[operator]
        out.append({"what": name, "bytes": size, "measured_ratio": mr, "simulated_ratio": sr,
                    "error": sr / mr - 1.0})
    return out


def table_text(rows: list[dict[str, Any]]) -> str:
    head = (f"{'network':<40} {'placement':<9} {'n':>2} {'algorithm':<13} {'size':>7} "
            f"{'measured_ms':>11} {'sim_ms':>9} {'error':>7}")
    out = [head, "-" * len(head)]
    for r in rows:
        out.append(f"{r['network']:<40} {r['placement']:<9} {r['ranks']:>2} "
                   f"{r['algorithm']:<13} {human_bytes(r['bytes']):>7} "
                   f"{r['measured_s'] * 1e3:>11.1f} {r['simulated_s'] * 1e3:>9.1f} "
                   f"{r['error'] * 100:>+6.1f}%")
    return "\n".join(out)


def plot(path: str, rows: list[dict[str, Any]]) -> None:
    from distnet.common.plotting import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 6))
    nets = sorted({r["network"] for r in rows})
    for i, nw in enumerate(nets):
        pts = [(r["measured_s"], r["simulated_s"]) for r in rows if r["network"] == nw]
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=14, color=f"C{i}", label=nw)
    lo = min(min(r["measured_s"], r["simulated_s"]) for r in rows)
    hi = max(max(r["measured_s"], r["simulated_s"]) for r in rows)
    xs = np.geomspace(lo, hi, 10)
    ax.plot(xs, xs, "k-", lw=1)
    for f, style in ((0.10, "--"), (0.25, ":")):
        ax.plot(xs, xs * (1 + f), "k" + style, lw=0.7)
        ax.plot(xs, xs * (1 - f), "k" + style, lw=0.7)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("measured on the emulated network (s)")
    ax.set_ylabel("simulated on the measured paths (s)")
    ax.set_title("all-reduce: simulator vs emulated network (±10 %, ±25 %)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def load_calibration(path: str) -> Calibration:
    try:
        d = json.loads(Path(path).read_text())
        cal = Calibration(**{k: float(d[k]) for k in
                             ("alpha_s", "efficiency", "wire_overhead", "rate_gbps")})
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"--calibration {path}: not a calibration file ({exc})") from None
    if not (0 <= cal.alpha_s < 1 and 0.05 < cal.efficiency <= 1.5
            and 0.5 < cal.wire_overhead < 2 and 0 < cal.rate_gbps <= 100):
        raise UserError(f"--calibration {path}: values out of range {cal}")
    return cal


def validate(rate_gbps: float = 0.2, sizes: list[int] | None = None, iters: int = 3,
             networks: tuple[Net, ...] = NETWORKS, prefix: str = "dv-", quick: bool = False,
             cal: Calibration | None = None) -> dict[str, Any]:
    """Calibrate (unless `cal` is given) on the first network, then measure every network."""
    sizes = sizes or [256 << 10, 1 << 20, 4 << 20, 16 << 20]
    if cal is not None and cal.rate_gbps != rate_gbps:
        raise UserError(f"the calibration was made at {cal.rate_gbps} Gb/s, not {rate_gbps}")
    rows: list[dict[str, Any]] = []
    links: list[dict[str, Any]] = []
    # On a terminal, a bar over the matrix (networks x runs); silent in logs and pipes.
    progress = bar(len(networks) * len(_runs(quick)), "emulate validate", unit="run")
    for nw in networks:
        cal, r, lk = measure_network(nw, rate_gbps, cal, sizes, iters, prefix, quick, progress)
        rows += r
        links += lk
    progress.close()
    assert cal is not None
    return {"calibration": asdict(cal), "rows": rows, "links": links,
            "summary": summary(rows, links), "ratios": ratios(rows, max(sizes))}


def merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One report from several `validate --json` files made with the same calibration (e.g.
    one network per run, so each run holds the benchmark lock only a few minutes)."""
    cals = {json.dumps(p["calibration"], sort_keys=True) for p in parts}
    if len(cals) != 1:
        raise UserError("--merge: the files were made with different calibrations")
    rows = [r for p in parts for r in p["rows"]]
    links = [r for p in parts for r in p["links"]]
    sizes = [r["bytes"] for r in rows]
    return {"calibration": parts[0]["calibration"], "rows": rows, "links": links,
            "summary": summary(rows, links), "ratios": ratios(rows, max(sizes)) if sizes else []}

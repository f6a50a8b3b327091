"""The what-if command (entry point distnet/whatif.py): project a profiled run onto a modelled
cluster (no MPI needed).

    python -m distnet.whatif --metrics run.jsonl --topology fat-tree:k=16 \\
        --ranks 8,64,512,4096 --algorithms ring,tree,hierarchical [--plot scaling.png]
        [--placement packed|scattered] [--routing ecmp|ideal] [--calibration bench.json]
        [--json OUT] [--compare-topologies]

    python -m distnet.whatif --failures --metrics run.jsonl --topology fat-tree:k=48 \\
        [--ranks 8,...,16384] [--costs docs/recovery-costs.json] [--node-mtbf-h H] ...

`--failures` projects goodput (useful steps / wall time) under node failures for four recovery
strategies instead (distnet.analysis.goodput, docs/whatif.md).
`--topology local` models this machine: one switch with one host per rank whose links run at the
calibrated bandwidth (`--calibration`, from `python -m distnet.bench --json`). The model and its
assumptions are in `distnet.analysis.projection`'s docstring and docs/whatif.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from typing import Any

from distnet.analysis.goodput_report import (
    add_failure_flags,
    check_cost,
    cluster_for,
    evaluate,
    format_table,
    overtake_text,
    plot_goodput,
    policy_from_args,
)
from distnet.analysis.projection import (
    MIB,
    NetModel,
    ProjectionRow,
    RunProfile,
    Variant,
    check_fits,
    compare_topologies,
    crossover,
    load_profile,
    project,
    simulator_comm,
)
from distnet.common.cli import Parser, run_cli
from distnet.common.errors import UserError
from distnet.common.jsonfile import finite
from distnet.common.outputs import check_no_alias, write_text_atomic
from distnet.common.plotting import pyplot, save_figure

PROG = "python -m distnet.whatif"
DEFAULT_RANKS = "8,64,512,4096"
DEFAULT_ALGORITHMS = "ring,tree,hierarchical"


# ---- this machine: calibration and a one-switch network ---------------------------------------
# The fit is topology.calibrate's: least squares in relative error of every bench record against
# the closed forms, coefficients kept >= 0. `min_s` by default: on a shared machine the bench's
# mean is dominated by preemption outliers (milliseconds of scheduler quanta on microsecond
# messages), while the minimum estimates the uncontended cost.
def load_calibration(path: str, stat: str = "min_s") -> Any:
    """A `topology.calibrate.Fit` (alpha_s, beta_s_per_byte, gamma_s_per_byte) of a bench file."""
    from topology.calibrate import fit, load_records

    result = fit(load_records(path, stat=stat))
    if result.beta_s_per_byte <= 0:
        raise UserError(f"calibration: the records of {path} do not determine a bandwidth")
    return result


def describe_calibration(cal: Any) -> str:
    return (f"alpha {1e6 * cal.alpha_s:.2f} us, beta {1e12 * cal.beta_s_per_byte:.1f} ps/B "
            f"({cal.bandwidth_gbps:.1f} Gb/s), gamma {1e12 * cal.gamma_s_per_byte:.1f} ps/B, "
            f"{len(cal.records)} points")


def build_network(spec: str, max_ranks: int, calib: Any, link_gbps: float | None) -> Any:
    """`local` (this machine, calibrated) or any `topology.spec` network spec."""
    if link_gbps is not None and link_gbps <= 0:
        raise UserError(f"--link-gbps must be > 0, got {link_gbps}")
    if spec == "local":
        from topology.calibrate import star

        gbps = link_gbps or (calib.bandwidth_gbps if calib else None)
        if gbps is None:
            raise UserError("--topology local needs --calibration (or --link-gbps)")
        # zero path latency: the calibrated alpha already holds the whole per-message cost
        return star(max_ranks, gbps)
    from topology.spec import parse_network

    overrides = {"link_gbps": link_gbps} if link_gbps is not None else {}
    return parse_network(spec, **overrides)


def default_variants(ranks: int, alpha_s: float | None, gamma: float | None,
                     seed: int) -> list[Variant]:
    """2-tier leaf-spine vs 3-tier CLOS vs fat-tree, 1:1 and 3:1, ECMP vs ideal, packed vs
    scattered — each sized for `ranks` hosts from 16-host racks."""
    from topology.spec import parse_network

    racks = max(2, math.ceil(ranks / 16))
    pods = max(2, math.ceil(racks / 8))
    k = 4
    while k ** 3 // 4 < ranks:
        k += 2
    specs = [
        f"leaf-spine:leaves={racks},spines=16,hosts=16",
        f"leaf-spine:leaves={racks},spines=16,hosts=16,oversub=3",
        f"clos:pods={pods},tors=8,hosts=16,aggs=8,cores=8",
        f"clos:pods={pods},tors=8,hosts=16,aggs=8,cores=8,oversub=3",
        f"fat-tree:k={k}",
    ]
    out = []
    for spec in specs:
        net = parse_network(spec)
        for routing in ("ecmp", "ideal"):
            for placement in ("packed", "scattered"):
                out.append(Variant(spec, NetModel(net, placement, routing, alpha_s, gamma, seed)))
    return out


def plot_scaling(path: str, rows: Sequence[ProjectionRow], algorithms: Sequence[str],
                 title: str) -> None:
    """Step time and efficiency vs ranks: one colour per algorithm, dashed = with overlap."""
    plt = pyplot()
    fig, (ax_t, ax_e) = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, alg in enumerate(algorithms):
        mine = [r for r in rows if r.algorithm == alg]
        p = [r.ranks for r in mine]
        colour = f"C{i}"
        ax_t.plot(p, [1e3 * r.step_s for r in mine], "o-", color=colour, label=alg)
        ax_t.plot(p, [1e3 * r.step_overlap_s for r in mine], "s--", color=colour,
                  label=f"{alg} + overlap")
        ax_e.plot(p, [100 * r.efficiency for r in mine], "o-", color=colour, label=alg)
        ax_e.plot(p, [100 * r.efficiency_overlap for r in mine], "s--", color=colour)
        cross = crossover(rows, alg)
        if cross is not None:
            ax_e.axvline(cross, color=colour, lw=0.8, ls=":")
    compute_ms = 1e3 * rows[0].compute_s
    ax_t.axhline(compute_ms, color="k", lw=0.8, ls=":", label="compute only")
    ax_t.axhline(2 * compute_ms, color="grey", lw=0.8, ls="-.", label="comm = compute")
    ax_e.axhline(50, color="grey", lw=0.8, ls="-.")
    for ax, ylabel in ((ax_t, "step time (ms)"), (ax_e, "weak-scaling efficiency (%)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("ranks")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    ax_t.set_yscale("log")
    ax_e.set_ylim(0, 105)
    ax_t.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description="Project measured training onto a modelled cluster.")
    a = p.add_argument
    a("--metrics", required=True,
      help="metrics JSONL of a `distnet.train --profile` run; several, comma-separated, are "
      "projected side by side (e.g. the same model with and without --compress)")
    a("--topology", required=True,
      help="network spec (fat-tree:k=16, leaf-spine:..., clos:...) or 'local' (this machine)")
    a("--ranks", help=f"comma-separated rank counts (default {DEFAULT_RANKS}; with --failures "
      f"8,16,...,16384)")
    a("--algorithms", help="comma-separated all-reduce names (default ring,tree,hierarchical; "
      "with --failures tree, and only the first is used)")
    a("--placement", default="packed", help="packed, scattered or random")
    a("--routing", default="ecmp", help="ecmp, ideal or dmodk")
    a("--calibration", help="distnet.bench --json file: fit alpha, beta, gamma of this machine")
    a("--calibration-stat", default="min_s", help="bench time to fit: min_s, median_s or avg_s")
    a("--link-gbps", type=float, help="override every link's bandwidth (Gb/s)")
    a("--alpha-us", type=float, help="per-message software overhead (default: simulator's)")
    a("--cores", type=int,
      help="with --topology local: cores all ranks share (default: this machine's)")
    a("--percentile", type=float, default=50.0,
      help="percentile of the measured per-step times to use (default: median)")
    a("--batch-per-rank", type=int, help="samples per rank per step (default: as measured)")
    a("--bucket-mb", type=float, default=25.0, help="bucket size for the overlap projection")
    a("--first-bucket-mb", type=float, default=1.0, help="first (small) bucket, DDP-style")
    a("--seed", type=int, default=0, help="ECMP hash / random placement seed")
    a("--compare-topologies", action="store_true",
      help="also print one table of several clusters at the largest rank count")
    a("--json", dest="json_out", help="write the projection rows to this JSON file")
    a("--plot", help="write a scaling plot (PNG) here (with --failures: goodput vs ranks)")
    add_failure_flags(p)
    return p


def parse_ranks(text: str) -> list[int]:
    try:
        ranks = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise UserError(f"--ranks: expected comma-separated integers, got {text!r}") from None
    if not ranks or ranks[0] < 1:
        raise UserError(f"--ranks: rank counts must be >= 1, got {text!r}")
    return ranks


def parse_algorithms(text: str) -> list[str]:
    from distnet.allreduce import get_schedule

    names = [x.strip() for x in text.split(",") if x.strip()]
    if not names:
        raise UserError("--algorithms: give at least one algorithm")
    for name in names:
        get_schedule(name)  # unknown or schedule-less names: one line listing the known ones
    return names


def format_rows(profile: RunProfile, rows: Sequence[ProjectionRow], header: str) -> str:
    lines = [header,
             f"{'algorithm':<14}{'ranks':>7}{'comm ms':>10}{'step ms':>10}{'samples/s':>12}"
             f"{'eff':>7}  |{'exposed ms':>11}{'step ms':>10}{'samples/s':>12}{'eff':>7}",
             f"{'':<31}(no overlap){'':<20}|  (bucketed, overlapped with backward)"]
    for r in rows:
        lines.append(
            f"{r.algorithm:<14}{r.ranks:>7}{1e3 * r.comm_s:>10.3f}{1e3 * r.step_s:>10.3f}"
            f"{r.samples_per_s:>12,.0f}{100 * r.efficiency:>6.1f}%  |"
            f"{1e3 * r.exposed_comm_s:>11.3f}{1e3 * r.step_overlap_s:>10.3f}"
            f"{r.samples_per_s_overlap:>12,.0f}{100 * r.efficiency_overlap:>6.1f}%")
    return "\n".join(lines)


def crossover_text(rows: Sequence[ProjectionRow], algorithms: Sequence[str]) -> list[str]:
    top = max(r.ranks for r in rows)
    out = []
    for alg in algorithms:
        parts = []
        for overlap, label in ((False, "no overlap"), (True, "overlap")):
            p = crossover(rows, alg, overlap)
            parts.append(f"{label}: from ~{p:,.0f} ranks" if p is not None
                         else f"{label}: not up to {top:,} ranks")
        out.append(f"  {alg}: communication >= compute — " + "; ".join(parts))
    return out


def format_comparison(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'topology':<56}{'routing':>8}{'placement':>11}{'comm ms':>10}"
             f"{'step ms':>10}{'eff':>7}{'overlap eff':>13}"]
    for r in rows:
        lines.append(f"{r['topology']:<56}{r['routing']:>8}{r['placement']:>11}"
                     f"{1e3 * r['comm_s']:>10.3f}{1e3 * r['step_s']:>10.3f}"
                     f"{100 * r['efficiency']:>6.1f}%{100 * r['efficiency_overlap']:>12.1f}%")
    return "\n".join(lines)


def check_args(args: argparse.Namespace) -> None:
    """Numbers from flags finite and in range (a NaN latency made the simulator spin forever),
    and no output over an input."""
    for flag, value, lo, hi in (("--bucket-mb", args.bucket_mb, 1e-6, 1e6),
                                ("--first-bucket-mb", args.first_bucket_mb, 1e-6, 1e6),
                                ("--alpha-us", args.alpha_us, 0.0, 1e6),
                                ("--link-gbps", args.link_gbps, 1e-9, 1e9),
                                ("--percentile", args.percentile, 0.0, 100.0)):
        if value is not None:
            finite(value, flag, lo, hi)
    if not 0 <= args.seed < 2**63:
        raise UserError(f"--seed must be in 0..2^63-1, got {args.seed}")
    if args.cores is not None and args.cores < 1:
        raise UserError(f"--cores must be >= 1, got {args.cores}")
    if args.batch_per_rank is not None and not 0 < args.batch_per_rank <= 2**40:
        raise UserError(f"--batch-per-rank must be in 1..2^40, got {args.batch_per_rank}")
    inputs = {f"--metrics {i + 1}": path.strip() for i, path in
              enumerate((args.metrics or "").split(","))}
    check_no_alias({"--json": args.json_out, "--plot": args.plot},
                   {**inputs, "--calibration": args.calibration})


def _inputs(args: argparse.Namespace, ranks: list[int]) -> tuple[list[RunProfile], Any, Any,
                                                                   NetModel]:
    """The measured profiles, the calibration, the network and its model, all checked up front
    (the network must hold the largest rank count before the smaller ones are simulated)."""
    profiles = [load_profile(path.strip(), args.percentile)
                for path in args.metrics.split(",") if path.strip()]
    if not profiles:
        raise UserError("--metrics: give at least one metrics file")
    calib = load_calibration(args.calibration, args.calibration_stat) if args.calibration else None
    net = build_network(args.topology, max(ranks), calib, args.link_gbps)
    check_fits(net, max(ranks))
    alpha_s = args.alpha_us * 1e-6 if args.alpha_us is not None else (
        calib.alpha_s if calib else None)
    gamma = calib.gamma_s_per_byte if calib else None
    return profiles, calib, net, NetModel(net, args.placement, args.routing, alpha_s, gamma,
                                          args.seed)


def run(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    check_args(args)
    if args.failures:
        return run_failures(args)
    ranks = parse_ranks(args.ranks or DEFAULT_RANKS)
    algorithms = parse_algorithms(args.algorithms or DEFAULT_ALGORITHMS)
    profiles, calib, net, model = _inputs(args, ranks)
    profile = profiles[0]
    if args.bucket_mb <= 0 or args.first_bucket_mb <= 0:
        raise UserError("--bucket-mb and --first-bucket-mb must be > 0")
    buckets = (int(args.bucket_mb * MIB), int(args.first_bucket_mb * MIB))
    comm = simulator_comm(model, profile.itemsize)
    cores = None
    if args.topology == "local":
        cores = args.cores or os.cpu_count() or 1
    per_profile = [project(prof, ranks, algorithms, comm, args.batch_per_rank, *buckets,
                           shared_cores=cores) for prof in profiles]
    rows = [row for prof_rows in per_profile for row in prof_rows]
    labels = [alg + prof.label for prof in profiles for alg in algorithms]
    batch = args.batch_per_rank or profile.batch_per_rank
    header = "\n".join(
        f"model: {prof.grad_bytes / 1e6:.3f} MB of gradients"
        + (f" ({sum(prof.wire_stages) / 1e6:.3f} MB on the wire with {prof.compressor}, "
           f"{1e3 * prof.compress_s:.3f} ms/step to compress)" if prof.label else "")
        + f", batch {batch}/rank, compute "
        f"{1e3 * prof_rows[0].compute_s:.3f} ms/step (measured on "
        f"{prof.world_size} rank(s): {1e3 * prof.measured_step_s:.3f} ms/step with "
        f"{prof.algorithm})" for prof, prof_rows in zip(profiles, per_profile, strict=True))
    header += (f"\nnetwork: {net.name} ({net.n_hosts} hosts), routing "
              f"{args.routing}, placement {args.placement}"
              + (f", {cores} shared cores" if cores else "")
              + (f", calibrated from {args.calibration}: {describe_calibration(calib)}"
                 if calib else ""))
    print(format_rows(profile, rows, header))
    print("\n".join(crossover_text(rows, labels)))
    result: dict[str, Any] = {"profile": vars(profile), "network": net.name,
                              "profiles": [vars(prof) for prof in profiles],
                              "rows": [r.as_dict() for r in rows],
                              "crossover": {a: {"no_overlap": crossover(rows, a, False),
                                                "overlap": crossover(rows, a, True)}
                                            for a in labels}}
    if args.compare_topologies:
        variants: list[Variant] = default_variants(max(ranks), model.alpha_s,
                                                   model.gamma_s_per_byte, args.seed)
        table = compare_topologies(profile, max(ranks), algorithms[0], variants,
                                   args.batch_per_rank, *buckets)
        print(f"\n{algorithms[0]} all-reduce, {max(ranks)} ranks, one model on several clusters:")
        print(format_comparison(table))
        result["comparison"] = table
    if args.json_out:
        _write_json(args.json_out, result)
    if args.plot:
        plot_scaling(args.plot, rows, labels, title=f"{net.name}, {args.routing}, "
                     f"{args.placement}; batch {batch}/rank")
    return result


def run_failures(args: argparse.Namespace) -> dict[str, Any]:
    """Goodput of each recovery strategy at each rank count (distnet.analysis.goodput)."""
    ranks = parse_ranks(args.ranks or ",".join(str(2 ** k) for k in range(3, 15)))
    algorithm = parse_algorithms(args.algorithms or "tree")[0]
    policy, costs = policy_from_args(args)
    check_cost(ranks, policy, args.mc_runs)
    profiles, calib, net, model = _inputs(args, ranks)
    profile = profiles[0]
    steps = project(profile, ranks, [algorithm], simulator_comm(model, profile.itemsize),
                    args.batch_per_rank)
    clusters = [cluster_for(r, profile, args.batch_per_rank, costs, policy) for r in steps]
    rows = evaluate(clusters, args.mc_runs, args.seed)
    print(f"goodput under node failures: node MTBF {policy.node_mtbf_s / 3600:,.0f} h, "
          f"{policy.ranks_per_node} rank(s)/node, job {policy.horizon_s / 86400:g} days, grow "
          f"back every {policy.grow_every_s / 3600:g} h, your checkpoint interval "
          f"{policy.checkpoint_every} steps, detection by {policy.detection}; costs from "
          f"{costs.source}; steps: {algorithm} on {net.name}; Monte Carlo {args.mc_runs} runs, "
          f"seed {args.seed}")
    print(format_table(rows))
    print("\n".join(overtake_text(rows)))
    result = {"network": net.name, "algorithm": algorithm, "policy": vars(policy),
              "costs": costs.source, "rows": rows}
    if args.json_out:
        _write_json(args.json_out, result)
    if args.plot:
        plot_goodput(args.plot, rows, f"{net.name}, {algorithm}; node MTBF "
                     f"{policy.node_mtbf_s / 3600:,.0f} h, job {policy.horizon_s / 86400:g} d, "
                     f"grow back every {policy.grow_every_s / 3600:g} h")
    return result


def _write_json(path: str, result: dict[str, Any]) -> None:
    write_text_atomic(path, json.dumps(result, indent=1) + "\n", "--json")


def main(argv: Sequence[str] | None = None) -> int:
    def body() -> int:
        run(argv)
        return 0

    return run_cli(PROG, body)


if __name__ == "__main__":
    sys.exit(main())

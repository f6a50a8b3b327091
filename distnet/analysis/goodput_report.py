"""`whatif --failures`: one Cluster per projected rank count, both estimates of every strategy,
the table, where shrinking overtakes restarting, and the plot."""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distnet.analysis.goodput import LLAMA3_RANK_MTBF_S, STRATEGIES, Cluster, closed_forms, plan
from distnet.analysis.montecarlo import simulate
from distnet.analysis.projection import ProjectionRow, RunProfile, compute_step_s
from distnet.analysis.recovery_costs import RecoveryCosts, load_costs
from distnet.common.errors import UserError
from distnet.common.plotting import pyplot, save_figure

# measured on this machine by `python -m tests.faults.measure 3 --costs docs/recovery-costs.json`
DEFAULT_COSTS = Path(__file__).resolve().parents[2] / "docs" / "recovery-costs.json"
MAX_EVENTS = 20_000_000  # failures all Monte Carlo runs may simulate: bounds the run time

LABELS = {"restart-optimal": "checkpoint-restart, Daly's interval",
          "restart-user": "checkpoint-restart, your interval",
          "shrink": "shrink-and-continue (ULFM)",
          "shrink-grow": "shrink + grow back from spares"}


@dataclass(frozen=True)
class Policy:
    """What the user chose: failure rate, job length and how to recover."""

    ranks_per_node: int
    node_mtbf_s: float
    horizon_s: float
    grow_every_s: float
    checkpoint_every: int
    detection: str  # "deadline" or "crash"


def add_failure_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("goodput under failures (--failures)")
    a = g.add_argument
    a("--failures", action="store_true",
      help="project goodput (useful steps / wall time) of checkpoint-restart, shrink-and-continue "
           "and grow-back from spares under node failures, instead of step times")
    a("--costs", default=str(DEFAULT_COSTS),
      help="recovery-cost file written by `python -m tests.faults.measure --costs` "
           "(default: docs/recovery-costs.json, measured here)")
    a("--node-mtbf-h", type=float,
      help=f"mean time between failures of one node, hours (default: Llama 3's 466 "
           f"interruptions in 54 days on 16,384 GPUs = {LLAMA3_RANK_MTBF_S / 3600:,.0f} h per "
           f"rank / ranks per node)")
    a("--ranks-per-node", type=int, default=1,
      help="ranks a node failure takes down at once (default 1, one rank per host)")
    a("--job-days", type=float, default=54.0,
      help="wall-clock length of the job, days: shrinking loses capacity over it (default 54)")
    a("--grow-every-h", type=float, default=24.0,
      help="shrink-grow: hours between grow-backs to full size from spares (default 24)")
    a("--checkpoint-every", type=int, default=1000,
      help="your checkpoint interval for restart-user, steps (default 1000)")
    a("--detection", choices=("deadline", "crash"), default="deadline",
      help="how a failed node is noticed: the step deadline (a hung or cut-off node) or the "
           "runtime's report of a dead process; measured seconds from --costs (default deadline)")
    a("--mc-runs", type=int, default=32,
      help="Monte Carlo runs per strategy and rank count (default 32; seeded by --seed)")


def _bounded(value: float, flag: str, lo: float, hi: float) -> float:
    if not (math.isfinite(value) and lo <= value <= hi):
        raise UserError(f"{flag} must be in [{lo:g}, {hi:g}], got {value}")
    return value


def policy_from_args(args: argparse.Namespace) -> tuple[Policy, RecoveryCosts]:
    """The validated failure policy and the measured costs of a `--failures` run."""
    rpn = int(_bounded(args.ranks_per_node, "--ranks-per-node", 1, 4096))
    mtbf_h = (LLAMA3_RANK_MTBF_S / 3600 / rpn if args.node_mtbf_h is None
              else _bounded(args.node_mtbf_h, "--node-mtbf-h", 0.01, 1e9))
    days = _bounded(args.job_days, "--job-days", 1e-3, 3650)
    grow_h = _bounded(args.grow_every_h, "--grow-every-h", 0.01, 1e6)
    every = int(_bounded(args.checkpoint_every, "--checkpoint-every", 1, 1e12))
    _bounded(args.mc_runs, "--mc-runs", 2, 10_000)
    if days * 24 / grow_h > 1e5:
        raise UserError(f"--job-days {days:g} holds more than 100,000 grow-back periods of "
                        f"{grow_h:g} h")
    policy = Policy(rpn, mtbf_h * 3600, days * 86400, grow_h * 3600, every, args.detection)
    return policy, load_costs(args.costs)


def check_cost(ranks: Sequence[int], policy: Policy, runs: int) -> None:
    """Refuse a Monte Carlo that would simulate more than MAX_EVENTS failures."""
    nodes = sum(max(1, r // policy.ranks_per_node) for r in ranks)
    events = 4 * runs * nodes * (policy.horizon_s / policy.node_mtbf_s + 1)
    if events > MAX_EVENTS:
        raise UserError(f"--failures: about {events:.2g} simulated failures (ranks x job length "
                        f"/ MTBF x --mc-runs); at most {MAX_EVENTS:.0e}: fewer runs or ranks, "
                        f"a shorter job or a longer MTBF")


def cluster_for(row: ProjectionRow, profile: RunProfile, batch_per_rank: int | None,
                costs: RecoveryCosts, policy: Policy) -> Cluster:
    fwd, bwd, _ = compute_step_s(profile, batch_per_rank)
    detect = costs.detect_deadline_s if policy.detection == "deadline" else costs.detect_crash_s
    return Cluster(
        ranks=row.ranks, ranks_per_node=policy.ranks_per_node, node_mtbf_s=policy.node_mtbf_s,
        compute_s=fwd + bwd, fixed_s=row.step_s - (fwd + bwd),
        checkpoint_s=costs.checkpoint_s(profile.grad_bytes),
        restart_s=detect + costs.restart_s(row.ranks, profile.grad_bytes),
        detect_s=detect, shrink_s=costs.shrink_s(max(2, row.ranks)),
        horizon_s=policy.horizon_s, grow_every_s=policy.grow_every_s,
        user_interval_steps=policy.checkpoint_every)


def evaluate(clusters: Sequence[Cluster], runs: int, seed: int) -> list[dict[str, Any]]:
    out = []
    for c in clusters:
        p = plan(c)
        cf = closed_forms(c)
        mc = simulate(c, runs, seed)
        out.append({
            "ranks": c.ranks, "nodes": c.nodes, "system_mtbf_h": c.system_mtbf_s / 3600,
            "step_s": c.step_s, "checkpoint_s": c.checkpoint_s, "restart_s": c.restart_s,
            "shrink_s": c.shrink_s, "detect_s": c.detect_s,
            "young_interval_s": p.young_s, "daly_interval_s": p.daly_s,
            "optimal_interval_steps": p.optimal_steps, "user_interval_steps": p.user_steps,
            "closed_form": cf,
            "monte_carlo": {k: {"mean": v.mean, "stderr": v.stderr, "runs": v.runs}
                            for k, v in mc.items()},
        })
    return out


def overtakes(rows: Sequence[dict[str, Any]], strategy: str,
              versus: str = "restart-optimal") -> float | None:
    """Rank count where `strategy`'s closed-form goodput first reaches `versus`'s (log-linear
    between the bracketing rank counts), or None if it never does in `rows`."""
    prev = None
    for r in rows:
        gap = r["closed_form"][strategy] - r["closed_form"][versus]
        if gap >= 0:
            if prev is None:
                return float(r["ranks"])
            (p0, g0), (p1, g1) = prev, (r["ranks"], gap)
            f = g0 / (g0 - g1)
            return float(2 ** (math.log2(p0) + f * (math.log2(p1) - math.log2(p0))))
        prev = (r["ranks"], gap)
    return None


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    head = (f"{'ranks':>7}{'MTBF h':>9}{'step ms':>9}{'ckpt s':>8}{'restart s':>10}"
            f"{'Young s':>9}{'Daly s':>9}{'steps':>7}  " +
            "".join(f"{k:>22}" for k in STRATEGIES))
    lines = [head, f"{'':<68}" + "".join(f"{'closed / Monte Carlo':>22}" for _ in STRATEGIES)]
    for r in rows:
        cells = "".join(f"{100 * r['closed_form'][k]:>12.3f} /"
                        f"{100 * r['monte_carlo'][k]['mean']:>7.3f}%" for k in STRATEGIES)
        lines.append(f"{r['ranks']:>7}{r['system_mtbf_h']:>9.1f}{1e3 * r['step_s']:>9.2f}"
                     f"{r['checkpoint_s']:>8.3f}{r['restart_s']:>10.2f}"
                     f"{r['young_interval_s']:>9.1f}{r['daly_interval_s']:>9.1f}"
                     f"{r['optimal_interval_steps']:>7}  {cells}")
    return "\n".join(lines)


def overtake_text(rows: Sequence[dict[str, Any]]) -> list[str]:
    top = max(r["ranks"] for r in rows)
    out = []
    for s in ("shrink", "shrink-grow"):
        p = overtakes(rows, s)
        out.append(f"  {LABELS[s]} overtakes checkpoint-restart at Daly's interval: "
                   + (f"from ~{p:,.0f} ranks" if p is not None else f"not up to {top:,} ranks"))
    return out


def plot_goodput(path: str, rows: Sequence[dict[str, Any]], title: str) -> None:
    """Goodput vs ranks: closed forms as lines, Monte Carlo means as markers with 2 stderr."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.6))
    ranks = [r["ranks"] for r in rows]
    for i, s in enumerate(STRATEGIES):
        colour = f"C{i}"
        ax.plot(ranks, [100 * r["closed_form"][s] for r in rows], "-", color=colour,
                label=LABELS[s])
        ax.errorbar(ranks, [100 * r["monte_carlo"][s]["mean"] for r in rows],
                    yerr=[200 * (r["monte_carlo"][s]["stderr"] or 0.0) for r in rows],
                    fmt="o", ms=3.5, color=colour, capsize=2)
        if s.startswith("shrink"):
            cross = overtakes(rows, s)
            if cross is not None:
                ax.axvline(cross, color=colour, lw=0.8, ls=":")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("ranks")
    ax.set_ylabel("goodput: useful steps / wall time (%)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, title="lines: closed form; dots: Monte Carlo", title_fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)

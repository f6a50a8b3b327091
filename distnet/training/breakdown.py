"""Where a profiled run spent its time: compute vs communication, and the all-reduce bandwidth.

Pure functions over metrics records (`metrics.read_metrics`), so the trainer can print the
breakdown at the end of a `--profile` run and `distnet.whatif` can reuse it on a file.

With bucketing and overlap, a step's `allreduce_s` is only the wait *after* backward (the
communication that did not hide), so the bandwidth derived from it is an effective upper bound,
not what the wire achieved; the text says so.
"""

from __future__ import annotations

import statistics
from typing import Any

PHASES = ("forward_s", "backward_s", "optim_s", "allreduce_s")
PHASE_LABELS = {"forward_s": "forward", "backward_s": "backward", "optim_s": "optimiser",
                "allreduce_s": "all-reduce"}


def split_runs(records: list[dict[str, Any]]) -> list[tuple[list[dict[str, Any]], dict | None]]:
    """(step records, final "done" record or None) of every run in a file, in order.

    A resumed run appends to the same file after the previous run's "done" record.
    """
    runs: list[tuple[list[dict[str, Any]], dict | None]] = []
    steps: list[dict[str, Any]] = []
    for rec in records:
        if rec.get("event") == "step":
            steps.append(rec)
        elif rec.get("event") == "done":
            runs.append((steps, rec))
            steps = []
    if steps:
        runs.append((steps, None))
    return runs


def last_profiled_run(records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict | None]:
    """(step records, "done" record or None) of the last run in the file that has step records;
    ([], None) if none has."""
    profiled = [run for run in split_runs(records) if run[0]]
    return profiled[-1] if profiled else ([], None)


def busbw_factor(world_size: int) -> float:
    """nccl-tests' bus-bandwidth factor for all-reduce, 2(p-1)/p: busbw = algbw * factor."""
    return 2.0 * (world_size - 1) / world_size if world_size > 0 else 0.0


def breakdown(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals, shares and median per-step times of the last profiled run in `records`.

    Returns {} when there is no step record (the run was not profiled). Bandwidths are in GB/s
    (1e9 bytes/s) and use the median step, which ignores the warm-up outliers of the first steps.
    """
    steps, _ = last_profiled_run(records)
    if not steps:
        return {}
    totals = {k: float(sum(float(s.get(k, 0.0)) for s in steps)) for k in PHASES}
    medians = {k: float(statistics.median(float(s.get(k, 0.0)) for s in steps)) for k in PHASES}
    total_s = sum(totals.values())
    compute_s = totals["forward_s"] + totals["backward_s"] + totals["optim_s"]
    world = int(steps[-1].get("world_size", 1))
    nbytes = int(steps[-1].get("bytes", 0))
    comm_median_s = medians["allreduce_s"]
    algbw_gbps = nbytes / comm_median_s / 1e9 if world > 1 and comm_median_s > 0 else None
    busbw_gbps = algbw_gbps * busbw_factor(world) if algbw_gbps is not None else None
    return {
        "steps": len(steps),
        "world_size": world,
        "algorithm": str(steps[-1].get("algorithm", "?")),
        "bytes_per_step": nbytes,
        "samples": int(sum(int(s.get("samples", 0)) for s in steps)),
        "totals_s": totals,
        "median_step_s": medians,
        "total_s": total_s,
        "compute_s": compute_s,
        "comm_s": totals["allreduce_s"],
        "compute_share": compute_s / total_s if total_s > 0 else 0.0,
        "comm_share": totals["allreduce_s"] / total_s if total_s > 0 else 0.0,
        "algbw_gbps": algbw_gbps,
        "busbw_gbps": busbw_gbps,
    }


def format_breakdown(b: dict[str, Any]) -> str:
    """A few lines for the end of a run; an empty breakdown explains how to get one."""
    if not b:
        return "profile: no per-step records (train with --profile --metrics FILE)"
    n = b["steps"]
    lines = [f"profile: {n} steps on {b['world_size']} rank(s), all-reduce {b['algorithm']}, "
             f"{b['bytes_per_step'] / 1e6:.3f} MB of gradients per step"]
    total = b["total_s"] or 1.0
    for key in PHASES:
        t = b["totals_s"][key]
        lines.append(f"  {PHASE_LABELS[key]:<10} {t:9.3f} s  {100 * t / total:5.1f} %  "
                     f"(median {1e3 * b['median_step_s'][key]:.3f} ms/step)")
    tail = (f"  compute {100 * b['compute_share']:.1f} % vs communication "
            f"{100 * b['comm_share']:.1f} %")
    if b["busbw_gbps"] is not None:
        tail += (f"; all-reduce achieved {b['algbw_gbps']:.3f} GB/s algbw, "
                 f"{b['busbw_gbps']:.3f} GB/s busbw (median step)")
    lines.append(tail)
    return "\n".join(lines)

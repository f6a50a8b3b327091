"""`--trace-plot PATH.png`: the trace's last steps drawn as a timeline, one lane per rank.

Each rank's lane has a top row for its compute phases (per-layer forward and backward, the
optimiser, checkpoints) and one thin row per bucket below it holding that bucket's all-reduce, so
buckets that overlap backward show as bars under the backward they run beside.
"""

from __future__ import annotations

from typing import Any

from distnet.common.plotting import pyplot, save_figure

COLOURS = {"forward": "#4c78a8", "backward": "#f58518", "optim": "#54a24b",
           "checkpoint": "#b279a2", "recovery": "#e45756", "eval": "#9d755d"}
BUCKET_COLOURS = ["#72b7b2", "#e45756", "#eeca3b", "#ff9da6", "#9d755d", "#bab0ac"]
PLOT_STEPS = 3


def _window(events: list[dict[str, Any]], steps: int) -> tuple[float, float]:
    """Time window (µs) of the first rank's last `steps` steps, stretched to the end of the
    reductions that started inside it."""
    first = min((e["pid"] for e in events), default=0)
    spans = sorted((e["ts"], e["ts"] + e["dur"]) for e in events
                   if e.get("cat") == "step" and e["ph"] == "X" and e["pid"] == first)
    if not spans:
        ts = [e["ts"] for e in events]
        return min(ts, default=0.0), max(ts, default=1.0)
    keep = spans[-steps:]
    lo, hi = keep[0][0], keep[-1][1]
    ends = [e["ts"] + e["dur"] for e in events
            if e["ph"] == "X" and e.get("cat") == "allreduce" and lo <= e["ts"] <= hi]
    return lo, max([hi, *ends])


def plot_timeline(trace: dict[str, Any], path: str, steps: int = PLOT_STEPS) -> None:
    plt = pyplot()
    events = [e for e in trace["traceEvents"] if e["ph"] in ("X", "i")]
    lo, hi = _window(events, steps)
    ranks = sorted({e["pid"] for e in events})
    buckets = sorted({e["tid"] for e in events if e["tid"] > 0})
    nb = max(1, len(buckets))
    fig, ax = plt.subplots(figsize=(13, 1.1 + 1.0 * len(ranks) * (1 + 0.25 * nb)))
    band = 1.0 + 0.3 * nb  # height of one rank's lane
    seen: set[str] = set()
    for e in events:
        if e["ph"] != "X" or e["ts"] + e["dur"] < lo or e["ts"] > hi:
            continue
        y0 = (len(ranks) - 1 - ranks.index(e["pid"])) * band
        x0, width = (e["ts"] - lo) / 1e3, e["dur"] / 1e3
        cat = e.get("cat", "")
        if e["tid"] == 0 and cat == "step":
            # A step's start as a dark tick across the rank's lane; the span would hide phases.
            ax.vlines(x0, y0 + 0.02, y0 + band - 0.12, color="#333333", linewidth=0.8,
                      label="step start" if "step start" not in seen else None)
            seen.add("step start")
        elif e["tid"] == 0:
            if cat not in COLOURS:
                continue
            label = cat if cat not in seen else None
            seen.add(cat)
            ax.broken_barh([(x0, width)], (y0 + 0.3 * nb + 0.1, 0.8), color=COLOURS[cat],
                           edgecolor="white", linewidth=0.3, label=label)
        elif cat == "allreduce":
            k = buckets.index(e["tid"])
            name = f"all-reduce bucket {k}"
            label = name if name not in seen else None
            seen.add(name)
            ax.broken_barh([(x0, width)], (y0 + 0.3 * (nb - 1 - k) + 0.05, 0.25),
                           color=BUCKET_COLOURS[k % len(BUCKET_COLOURS)], label=label)
    ax.set_yticks([(len(ranks) - 1 - i) * band + band / 2 for i in range(len(ranks))])
    ax.set_yticklabels([f"rank {r}" for r in ranks], fontsize=11)
    ax.set_xlim(0, (hi - lo) / 1e3)
    ax.set_ylim(-0.1, len(ranks) * band)
    ax.set_xlabel("time (ms, rank 0's clock)", fontsize=11)
    meta = trace.get("otherData", {})
    err = max((c["error_us"] for c in meta.get("clock_offsets", {}).values()), default=0.0)
    ax.set_title(f"distnet timeline: {len(ranks)} ranks, last {steps} steps; per rank: compute "
                 f"by layer on top, one row per bucket's all-reduce below (clock error <= "
                 f"{err:.0f} us)", fontsize=11)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=9, frameon=False)
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)

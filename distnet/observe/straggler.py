"""Straggler blame: who arrives last at each step's first reduction, and by how much.

Every rank notes the time it reaches the first all-reduce of a step (the first bucket's start,
or the single reduction). That is the moment it is ready to communicate: whoever gets there
last makes every other rank wait. The notes stay local (an array append per step, no message),
and are gathered once at the end onto rank 0's clock, so tracking costs nothing per step.

Per step: last = the rank with the latest arrival, its lead = its arrival − the second latest
(what the step would have gained without it), and each rank's wait = latest arrival − its own.
A rank is blamed when it is last in at least SHARE_MIN of the steps and its median lead is at
least max(MIN_LEAD_S, LEAD_FRACTION × the median step): with symmetric ranks each is last in
about 1/p of the steps by chance, and scheduling noise leads by far less than a step.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from distnet.observe.clock import ClockMap

SHARE_MIN = 0.5
MIN_LEAD_S = 2e-3
LEAD_FRACTION = 0.2


class ArrivalLog:
    """This rank's arrival times (own clock) per step; a redone step keeps its last arrival."""

    def __init__(self) -> None:
        self._steps = array("q")
        self._times = array("d")

    def arrive(self, step: int, t: float) -> None:
        if self._steps and self._steps[-1] == step:
            self._times[-1] = t
        else:
            self._steps.append(step)
            self._times.append(t)

    def __len__(self) -> int:
        return len(self._steps)

    def payload(self, world_rank: int, cmap: ClockMap) -> dict[str, Any]:
        times = [cmap.to_rank0(t) for t in self._times]
        return {"rank": world_rank, "steps": list(self._steps), "times": times}


@dataclass
class Blame:
    ranks: list[int]
    steps: int
    last_count: dict[int, int] = field(default_factory=dict)
    median_lead_s: dict[int, float] = field(default_factory=dict)
    median_wait_s: dict[int, float] = field(default_factory=dict)
    median_step_s: float = 0.0
    straggler: int | None = None

    def line(self) -> str:
        if self.straggler is not None:
            r = self.straggler
            return (f"straggler: world rank {r} arrived last in "
                    f"{100 * self.last_count[r] / self.steps:.0f} % of steps, "
                    f"median +{1e3 * self.median_lead_s[r]:.1f} ms")
        if not self.steps:
            return "straggler: none (no step with two or more ranks)"
        top = max(self.last_count, key=lambda r: (self.last_count[r], -r))
        return (f"straggler: none ({len(self.ranks)} ranks, {self.steps} steps; most often last: "
                f"world rank {top}, {100 * self.last_count[top] / self.steps:.0f} % of steps, "
                f"median +{1e3 * self.median_lead_s.get(top, 0.0):.1f} ms)")

    def record(self) -> dict[str, Any]:
        """The metrics-file record."""
        return {"event": "straggler", "straggler": self.straggler, "line": self.line(),
                "steps": self.steps, "ranks": self.ranks,
                "last_count": {str(r): c for r, c in self.last_count.items()},
                "median_lead_s": {str(r): v for r, v in self.median_lead_s.items()},
                "median_wait_s": {str(r): v for r, v in self.median_wait_s.items()},
                "median_step_s": self.median_step_s}


def blame(payloads: list[dict[str, Any]]) -> Blame:
    """Judge the gathered arrival logs (rank 0). Steps seen by fewer than two ranks are skipped."""
    ranks = sorted(p["rank"] for p in payloads)
    col = {r: i for i, r in enumerate(ranks)}
    all_steps = sorted({s for p in payloads for s in p["steps"]})
    row = {s: i for i, s in enumerate(all_steps)}
    arr = np.full((len(all_steps), len(ranks)), np.nan)
    for p in payloads:
        for s, t in zip(p["steps"], p["times"], strict=True):
            arr[row[s], col[p["rank"]]] = t
    arr = arr[np.sum(~np.isnan(arr), axis=1) >= 2]
    out = Blame(ranks=ranks, steps=int(arr.shape[0]))
    if not out.steps:
        return out
    filled = np.where(np.isnan(arr), -np.inf, arr)
    last = np.argmax(filled, axis=1)
    latest = filled[np.arange(len(last)), last]
    second = np.sort(filled, axis=1)[:, -2]
    lead = latest - second
    waits = latest[:, None] - arr  # NaN where a rank was absent
    if len(latest) > 1:
        out.median_step_s = float(np.median(np.diff(latest)))
    for i, r in enumerate(ranks):
        mine = last == i
        out.last_count[r] = int(mine.sum())
        if mine.any():
            out.median_lead_s[r] = float(np.median(lead[mine]))
        w = waits[:, i]
        out.median_wait_s[r] = float(np.median(w[~np.isnan(w)])) if (~np.isnan(w)).any() else 0.0
    top = max(out.last_count, key=lambda r: (out.last_count[r], -r))
    bar = max(MIN_LEAD_S, LEAD_FRACTION * out.median_step_s)
    if (out.last_count[top] >= SHARE_MIN * out.steps
            and out.median_lead_s.get(top, 0.0) >= bar):
        out.straggler = top
    return out

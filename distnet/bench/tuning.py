"""`--tune` over several passes: the pick per size is the algorithm whose *worst* pass is best.

One pass picks the winner of one noisy moment; near-ties (ring vs Rabenseifner at 1–4 MiB, shm
vs native at a few KiB) then flip from run to run and `auto` is 10–25 % off in the next run.
So the bench measures every algorithm `passes` times (each pass a full sweep, so machine load
that drifts over minutes hits every algorithm alike), takes each pass's median per algorithm and
size, and ranks algorithms by the slowest of those medians: an algorithm that is fast on
average but sometimes loses badly (descheduled syncs, a cache it shares) is the wrong default
for a later run, and the next run is what `auto` is judged on. The spread of the pick,
(max − min) / mean over passes, says how far one run can move it; the runner-up is kept in the
tune file when its worst pass is within that spread of the pick's (a near-tie: either is right).

Pure functions of the records `sweep.measure` returns, so the unit tests check them without MPI.
"""

from __future__ import annotations

from typing import Any

import numpy as np

Record = dict[str, Any]


def combine_passes(passes: list[list[Record]]) -> list[Record]:
    """One record per (algorithm, size): pass 1's fields, median_s = the slowest pass median
    (the decision key), mean_s = their mean, pass_medians_s, spread = (max − min) / mean."""
    by_key: dict[tuple[str, int], list[Record]] = {}
    for records in passes:
        for r in records:
            by_key.setdefault((r["algorithm"], r["bytes"]), []).append(r)
    out = []
    for rs in by_key.values():
        meds = np.array([r["median_s"] for r in rs])
        mean = float(meds.mean())
        out.append({**rs[0], "median_s": float(meds.max()), "mean_s": mean,
                    "pass_medians_s": meds.tolist(),
                    "spread": float((meds.max() - meds.min()) / mean) if mean > 0 else 0.0})
    return out


def spread_rows(records: list[Record], exclude: tuple[str, ...] = ("auto",)) -> list[Record]:
    """Per size: the pick (best worst pass), its spread, and the runner-up if within that
    spread; worst_s / runner_up_worst_s are the decision key (the worst pass median)."""
    sizes = sorted({r["bytes"] for r in records})
    rows = []
    for s in sizes:
        ranked = sorted((r for r in records if r["bytes"] == s and r["algorithm"] not in exclude
                         and "@" not in r["algorithm"]),  # NAME@window: not for auto
                        key=lambda r: r["median_s"])
        if not ranked:
            continue
        best = ranked[0]
        row: Record = {"bytes": s, "pick": best["algorithm"], "worst_s": best["median_s"],
                       "spread": best.get("spread", 0.0), "runner_up": None}
        if len(ranked) > 1:
            second = ranked[1]
            gap = second["median_s"] / best["median_s"] - 1 if best["median_s"] > 0 else 0.0
            noise = max(best.get("spread", 0.0), second.get("spread", 0.0))
            row["runner_up_gap"] = gap
            if gap <= noise:
                row["runner_up"] = second["algorithm"]
                row["runner_up_worst_s"] = second["median_s"]
        rows.append(row)
    return rows

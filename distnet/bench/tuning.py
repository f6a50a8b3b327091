"""`--tune` over several passes: the pick per size is the algorithm fastest *on average*.

One pass picks the winner of one noisy moment; near-ties (ring vs Rabenseifner at 1–4 MiB, shm
vs native at a few KiB) then flip from run to run and `auto` is 10–25 % off in the next run.
So the bench measures every algorithm `passes` times (each pass a full sweep, so machine load
that drifts over minutes hits every algorithm alike), takes each pass's median per algorithm and
size, and ranks algorithms by the mean of those medians. The spread of the pick, (max − min) /
mean over passes, says how far one run can move it; the runner-up is kept in the tune file
when its mean is within that spread of the pick's (a near-tie: either is right).

Pure functions of the records `sweep.measure` returns, so the unit tests check them without MPI.
"""

from __future__ import annotations

from typing import Any

import numpy as np

Record = dict[str, Any]


def combine_passes(passes: list[list[Record]]) -> list[Record]:
    """One record per (algorithm, size): pass 1's fields, median_s = mean of the pass medians,
    plus pass_medians_s and spread = (max − min) / mean of them."""
    by_key: dict[tuple[str, int], list[Record]] = {}
    for records in passes:
        for r in records:
            by_key.setdefault((r["algorithm"], r["bytes"]), []).append(r)
    out = []
    for rs in by_key.values():
        meds = np.array([r["median_s"] for r in rs])
        mean = float(meds.mean())
        out.append({**rs[0], "median_s": mean, "pass_medians_s": meds.tolist(),
                    "spread": float((meds.max() - meds.min()) / mean) if mean > 0 else 0.0})
    return out


def spread_rows(records: list[Record], exclude: tuple[str, ...] = ("auto",)) -> list[Record]:
    """Per size: the pick (lowest mean), its spread, and the runner-up if within that spread."""
    sizes = sorted({r["bytes"] for r in records})
    rows = []
    for s in sizes:
        ranked = sorted((r for r in records if r["bytes"] == s and r["algorithm"] not in exclude
                         and "@" not in r["algorithm"]),  # NAME@window: not for auto
                        key=lambda r: r["median_s"])
        if not ranked:
            continue
        best = ranked[0]
        row: Record = {"bytes": s, "pick": best["algorithm"], "mean_s": best["median_s"],
                       "spread": best.get("spread", 0.0), "runner_up": None}
        if len(ranked) > 1:
            second = ranked[1]
            gap = second["median_s"] / best["median_s"] - 1 if best["median_s"] > 0 else 0.0
            noise = max(best.get("spread", 0.0), second.get("spread", 0.0))
            row["runner_up_gap"] = gap
            if gap <= noise:
                row["runner_up"] = second["algorithm"]
                row["runner_up_mean_s"] = second["median_s"]
        rows.append(row)
    return rows

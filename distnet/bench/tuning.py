"""`--tune` over several passes: the pick per size is the algorithm that is fastest on average.

One pass picks the winner of one noisy moment; near-ties (ring vs Rabenseifner at 1–4 MiB, five
algorithms within a few microseconds at 8 B – 512 KiB with four ranks on two cores) then flip
from run to run. So the bench measures every algorithm `passes` times. Each pass is a full sweep
(so load that drifts over minutes hits every algorithm alike), and inside a pass the algorithms
take turns at each size, round by round (`sweep.measure_interleaved`), so load that drifts over
seconds does too. Each algorithm is ranked by the mean of its per-pass medians.

The tune file records, per size, the pick, its mean and its spread over the passes,
(max − min) / mean, which says how far one run can move it; and the runner-up, with its own
mean and spread, when it is within noise of the pick (its mean is no more than the larger of
the two spreads above the pick's): a near-tie, either is right in a later run.

Pure functions of the records `sweep.measure_interleaved` returns, so the unit tests check them
without MPI.
"""

from __future__ import annotations

from typing import Any

import numpy as np

Record = dict[str, Any]


def combine_passes(passes: list[list[Record]]) -> list[Record]:
    """One record per (algorithm, size): pass 1's fields, median_s = the mean of the pass
    medians (the decision key, as `mean_s`), worst_s = the slowest pass median,
    pass_medians_s, spread = (max − min) / mean."""
    by_key: dict[tuple[str, int], list[Record]] = {}
    for records in passes:
        for r in records:
            by_key.setdefault((r["algorithm"], r["bytes"]), []).append(r)
    out = []
    for rs in by_key.values():
        meds = np.array([r["median_s"] for r in rs])
        mean = float(meds.mean())
        out.append({**rs[0], "median_s": mean, "mean_s": mean, "worst_s": float(meds.max()),
                    "pass_medians_s": meds.tolist(),
                    "spread": float((meds.max() - meds.min()) / mean) if mean > 0 else 0.0})
    return out


def spread_rows(records: list[Record], exclude: tuple[str, ...] = ("auto",)) -> list[Record]:
    """Per size: the pick (lowest mean over passes), its mean and spread, and the runner-up
    with its mean and spread when the gap between them is within noise."""
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
                row["runner_up_spread"] = second.get("spread", 0.0)
        rows.append(row)
    return rows

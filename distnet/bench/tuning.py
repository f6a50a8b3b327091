"""`--tune` over several passes: the pick per size is the algorithm that is fastest on average.

One pass picks the winner of one noisy moment; near-ties (ring vs Rabenseifner at 1–4 MiB, five
algorithms within a few microseconds at 8 B – 512 KiB with four ranks on two cores) then flip
from run to run. So the bench measures every algorithm `passes` times. Each pass is a full sweep
(so load that drifts over minutes hits every algorithm alike), and inside a pass the algorithms
take turns at each size, round by round (`sweep.measure_interleaved`), so load that drifts over
seconds does too. Each algorithm is ranked by its average over the passes: the mean of its
pass medians relative to each pass's fastest, pooled with the neighbouring sizes (`scores`).

The tune file records, per size, the pick, its score, its mean time and its spread over the passes,
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


# Sizes within this factor of a size are pooled into its score (the default sweep steps by 2).
NEIGHBOUR_FACTOR = 2


def scores(records: list[Record],
           exclude: tuple[str, ...] = ("auto",)) -> dict[int, dict[str, float]]:
    """Per size, each algorithm's mean ratio to the fastest, over the passes and neighbours.

    In a pass, an algorithm's median at a size divided by the fastest median at that size and
    pass: 1.0 when it was the fastest. A size's score averages those ratios over every pass and
    over the measured sizes within NEIGHBOUR_FACTOR of it. Ratios, not times, so a pass under
    heavier load, or a larger neighbour, weighs as much as the others. The pooling is there
    because with four ranks on two cores one pass median moves by 20-60 % while the algorithms
    differ by 5-20 %, and an algorithm's advantage changes smoothly with the size: three sizes
    give three times the evidence, and at a true crossover, where the pooling can shift the
    pick by one size, the two algorithms are within a few per cent of each other anyway.
    """
    ratios: dict[int, dict[str, list[float]]] = {}
    for s in sorted({r["bytes"] for r in records}):
        rows = [r for r in records if r["bytes"] == s and r["algorithm"] not in exclude
                and "@" not in r["algorithm"]]  # NAME@window: not for auto
        if not rows:
            continue
        meds = {r["algorithm"]: r.get("pass_medians_s", [r["median_s"]]) for r in rows}
        passes = min(len(m) for m in meds.values())
        fastest = [min(m[k] for m in meds.values()) for k in range(passes)]
        ratios[s] = {a: [m[k] / fastest[k] if fastest[k] > 0 else 1.0 for k in range(passes)]
                     for a, m in meds.items()}
    out: dict[int, dict[str, float]] = {}
    for s, own in ratios.items():
        near = [t for t in ratios if s / NEIGHBOUR_FACTOR <= t <= s * NEIGHBOUR_FACTOR]
        out[s] = {a: float(np.mean([x for t in near for x in ratios[t].get(a, [])]))
                  for a in own}
    return out


def spread_rows(records: list[Record], exclude: tuple[str, ...] = ("auto",)) -> list[Record]:
    """Per size: the pick (the lowest score, see `scores`), its score, mean time and spread,
    and the runner-up with its score, mean and spread when the gap is within noise (no more
    than the larger of the two spreads)."""
    by_size = scores(records, exclude)
    rec = {(r["algorithm"], r["bytes"]): r for r in records}
    rows = []
    for s, score in sorted(by_size.items()):
        ranked = sorted(score, key=lambda a: score[a])
        best = rec[(ranked[0], s)]
        row: Record = {"bytes": s, "pick": ranked[0], "score": score[ranked[0]],
                       "mean_s": best["median_s"], "spread": best.get("spread", 0.0),
                       "runner_up": None}
        if len(ranked) > 1:
            second = rec[(ranked[1], s)]
            gap = score[ranked[1]] / score[ranked[0]] - 1
            noise = max(best.get("spread", 0.0), second.get("spread", 0.0))
            row["runner_up_gap"] = gap
            if gap <= noise:
                row.update(runner_up=ranked[1], runner_up_score=score[ranked[1]],
                           runner_up_mean_s=second["median_s"],
                           runner_up_spread=second.get("spread", 0.0))
        rows.append(row)
    return rows

"""Seeded discrete-event Monte Carlo of the goodput model in `goodput` (same assumptions, no
closed form): the test holds the two within 2 %.

Events are failures; between two of them the job's progress is counted in whole steps (a step
cut short is lost), so the loops run once per failure, not once per step — a 54-day job on
16,384 ranks is a few hundred events.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from distnet.analysis.goodput import Cluster, plan


@dataclass(frozen=True)
class Estimate:
    mean: float
    stderr: float
    runs: int


def restart_run(rng: np.random.Generator, interval_s: float, checkpoint_s: float,
                restart_s: float, mtbf_s: float, horizon_s: float) -> float:
    """One job of `horizon_s` wall time: useful work / wall time."""
    segment = interval_s + checkpoint_s
    t = work = 0.0
    while True:
        gap = rng.exponential(mtbf_s)
        if t + gap >= horizon_s:  # no failure before the end: it is all useful but the saves
            left = horizon_s - t
            whole = math.floor(left / segment)
            work += whole * interval_s + min(left - whole * segment, interval_s)
            return work / horizon_s
        work += math.floor(gap / segment) * interval_s  # the segment in progress is lost
        t += gap
        while True:  # restart; a failure during it starts it again
            gap = rng.exponential(mtbf_s)
            if gap >= restart_s:
                t += restart_s
                break
            t += gap
        if t >= horizon_s:
            return work / horizon_s


def _failure_times(rng: np.random.Generator, nodes: int, node_mtbf_s: float,
                   duration_s: float) -> np.ndarray:
    """Sorted times of the node failures within [0, duration_s) of `nodes` fresh nodes."""
    p_fail = -math.expm1(-duration_s / node_mtbf_s)
    k = int(rng.binomial(nodes, p_fail))
    # a lifetime conditioned on ending within the window: inverse CDF of the truncated exponential
    u = rng.random(k)
    return np.sort(-node_mtbf_s * np.log1p(-u * p_fail))


def shrink_run(rng: np.random.Generator, c: Cluster, duration_s: float) -> tuple[float, int]:
    """(useful work in full-size step seconds, failures) of a shrinking job over `duration_s`."""
    alive = c.nodes
    work = 0.0
    free_at = 0.0  # end of the recovery in progress
    failures = _failure_times(rng, c.nodes, c.node_mtbf_s, duration_s)
    for tf in failures:
        step = float(c.step_alive_s(alive))
        if tf > free_at:  # it strikes a working job: the step in progress is lost
            work += math.floor((tf - free_at) / step) * c.step_s
            start = tf
        else:  # it strikes during a recovery: handled after it
            start = free_at
        alive -= 1
        if alive == 0:
            return work, len(failures)
        free_at = start + c.detect_s + c.shrink_s
    if free_at < duration_s:
        work += math.floor((duration_s - free_at) / float(c.step_alive_s(alive))) * c.step_s
    return work, len(failures)


def grow_run(rng: np.random.Generator, c: Cluster, horizon_s: float) -> float:
    """Cycles of G of shrinking, each followed by a checkpoint and a full-size restart on spares
    when a node was lost, until the wall time reaches `horizon_s`."""
    wall = work = 0.0
    while wall < horizon_s:
        done, failed = shrink_run(rng, c, c.grow_every_s)
        work += done
        wall += c.grow_every_s + (c.checkpoint_s + c.restart_s if failed else 0.0)
    return work / wall


def _replicate(one: Callable[[np.random.Generator], float], runs: int, seed: int) -> Estimate:
    rngs = [np.random.default_rng([seed, i]) for i in range(runs)]
    values = np.array([one(r) for r in rngs])
    err = float(values.std(ddof=1) / math.sqrt(runs)) if runs > 1 else float("nan")
    return Estimate(float(values.mean()), err, runs)


def simulate(c: Cluster, runs: int = 32, seed: int = 0) -> dict[str, Estimate]:
    """Monte Carlo goodput of every strategy, each from its own seeded streams."""
    p = plan(c)
    m = c.system_mtbf_s
    h = c.horizon_s
    return {
        "restart-optimal": _replicate(lambda r: restart_run(
            r, p.optimal_steps * c.step_s, c.checkpoint_s, c.restart_s, m, h), runs, seed),
        "restart-user": _replicate(lambda r: restart_run(
            r, p.user_steps * c.step_s, c.checkpoint_s, c.restart_s, m, h), runs, seed + 1),
        "shrink": _replicate(lambda r: shrink_run(r, c, h)[0] / h, runs, seed + 2),
        "shrink-grow": _replicate(lambda r: grow_run(r, c, h), runs, seed + 3),
    }

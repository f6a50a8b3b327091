"""Goodput at scale: the share of wall time spent on useful training steps under node failures,
for four ways of living with them (closed forms here, a seeded Monte Carlo in `montecarlo`).

The model, shared by the closed forms and the simulation:
- Nodes of `ranks_per_node` ranks fail independently, exponentially, each with mean time
  between failures `node_mtbf_s` (wall clock). The default rate is Llama 3's: 466 job
  interruptions in 54 days on 16,384 GPUs (Dubey et al. 2024, sec. 3.3.4), i.e. one per
  ~45,600 GPU-hours. A job of `nodes` nodes sees failures every M = node_mtbf_s / nodes.
- Useful work is measured in steps of the full-size job: a step on fewer ranks (same global
  batch, bigger share per rank) is worth step_s(full) / step_s(smaller) of one.
- A fault is noticed after `detect_s` (the step deadline for a hung or cut-off node).

Strategies:
- restart (checkpoint every τ of work, checkpoint costs δ, a failure loses the work since the
  last checkpoint, the job restarts on spare nodes in R = detect + job start + checkpoint load,
  and a failure during a restart starts it again). Daly (2006) gives the exact expected wall
  time of this model, T = M e^{R/M} (e^{(τ+δ)/M} − 1) per τ of work, so goodput = τ / T;
  Young's (1974) optimum τ = sqrt(2δM) and Daly's higher-order one are both printed, the
  strategy uses Daly's, rounded to whole steps.
- shrink (ULFM: survivors drop the failed node's ranks and continue; a failure costs
  detect + shrink + the interrupted part of the step, on average half a step, then the step is
  redone). Nobody comes back, so capacity decays over the job's horizon H: with A(t) ~
  Binomial(nodes, e^{−t/node_mtbf}) nodes alive,
      goodput = 1/H ∫_0^H E[ρ(A) (1 − A c(A) / node_mtbf)] dt,
  ρ(a) = step_s(all) / step_s(a), c(a) = detect + shrink + step_s(a)/2.
- grow (shrink, plus every G of wall time the job checkpoints and restarts at full size on
  spares if anyone is missing): a renewal process with cycle G + P(a failure in G)(δ + R).

Costs come from a measured file (`recovery_costs`), not from constants here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from distnet.common.errors import UserError

LLAMA3_INTERRUPTIONS = 466
LLAMA3_DAYS = 54
LLAMA3_GPUS = 16384
LLAMA3_RANK_MTBF_S = LLAMA3_DAYS * 86400.0 * LLAMA3_GPUS / LLAMA3_INTERRUPTIONS
STRATEGIES = ("restart-optimal", "restart-user", "shrink", "shrink-grow")
_QUADRATURE_POINTS = 48  # Gauss-Legendre on a smooth decay: far below 1e-6 relative error


@dataclass(frozen=True)
class Cluster:
    """One cluster size and what each recovery costs on it (all times in seconds)."""

    ranks: int
    ranks_per_node: int
    node_mtbf_s: float
    compute_s: float  # forward + backward of one full-size step: grows as nodes/alive if shrunk
    fixed_s: float  # optimiser + all-reduce: taken as unchanged by a shrink
    checkpoint_s: float  # δ
    restart_s: float  # R = detect + job start + checkpoint load
    detect_s: float
    shrink_s: float
    horizon_s: float  # H, the job's length in wall time
    grow_every_s: float  # G
    user_interval_steps: int

    def __post_init__(self) -> None:
        if self.ranks < 1 or self.ranks_per_node < 1:
            raise UserError("ranks and ranks per node must be >= 1")
        for name in ("node_mtbf_s", "horizon_s", "grow_every_s"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise UserError(f"{name} must be finite and > 0, got {v}")
        for name in ("compute_s", "fixed_s", "checkpoint_s", "restart_s", "detect_s",
                     "shrink_s"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise UserError(f"{name} must be finite and >= 0, got {v}")
        if self.compute_s + self.fixed_s <= 0:
            raise UserError("a step must take some time")
        if self.user_interval_steps < 1:
            raise UserError("the checkpoint interval must be >= 1 step")

    @property
    def nodes(self) -> int:
        return max(1, self.ranks // self.ranks_per_node)

    @property
    def system_mtbf_s(self) -> float:
        return self.node_mtbf_s / self.nodes

    @property
    def step_s(self) -> float:
        return self.compute_s + self.fixed_s

    def step_alive_s(self, alive: np.ndarray | int) -> np.ndarray:
        """Step time with `alive` nodes left (the global batch is kept; alive >= 1)."""
        a = np.maximum(np.asarray(alive, float), 1.0)
        return self.compute_s * self.nodes / a + self.fixed_s

    def shrink_cost_s(self, alive: np.ndarray | int) -> np.ndarray:
        """Wall time one failure costs the shrinking job: detect, shrink, half a step lost."""
        return self.detect_s + self.shrink_s + 0.5 * self.step_alive_s(alive)


# ---- checkpoint-restart ---------------------------------------------------------------------
def young_interval_s(checkpoint_s: float, mtbf_s: float) -> float:
    """Young (1974): τ = sqrt(2 δ M), first order in δ/M."""
    return math.sqrt(2.0 * checkpoint_s * mtbf_s)


def daly_interval_s(checkpoint_s: float, mtbf_s: float) -> float:
    """Daly (2006) eq. 37: the higher-order optimum, M itself once δ >= 2M."""
    d, m = checkpoint_s, mtbf_s
    if d >= 2.0 * m:
        return m
    x = d / (2.0 * m)
    return math.sqrt(2.0 * d * m) * (1.0 + math.sqrt(x) / 3.0 + x / 9.0) - d


def restart_goodput(interval_s: float, checkpoint_s: float, restart_s: float,
                    mtbf_s: float) -> float:
    """Daly (2006): τ / (M e^{R/M} (e^{(τ+δ)/M} − 1)), exact for the restart model above."""
    m = mtbf_s
    # expm1 keeps the small-exponent case (rare failures) accurate
    wall = m * math.exp(restart_s / m) * math.expm1((interval_s + checkpoint_s) / m)
    return interval_s / wall if math.isfinite(wall) and wall > 0 else 0.0


def restart_goodput_first_order(interval_s: float, checkpoint_s: float, restart_s: float,
                                mtbf_s: float) -> float:
    """Young's first-order waste: δ/τ + ((τ+δ)/2 + R)/M (for reference beside Daly's)."""
    waste = checkpoint_s / interval_s + ((interval_s + checkpoint_s) / 2 + restart_s) / mtbf_s
    return max(0.0, 1.0 - waste)


def interval_in_steps(interval_s: float, step_s: float) -> int:
    return max(1, round(interval_s / step_s))


# ---- shrink-and-continue --------------------------------------------------------------------
def _binomial_pmf(n: int, p: float) -> np.ndarray:
    """pmf[k] = P(Binomial(n, p) = k), computed in log space (n up to millions)."""
    k = np.arange(n + 1, dtype=float)
    log_fact = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, n + 1, dtype=float)))])
    log_choose = log_fact[n] - log_fact - log_fact[::-1]
    p = min(max(p, 1e-300), 1.0)
    q = max(1.0 - p, 1e-300)
    logs = log_choose + k * math.log(p) + (n - k) * math.log(q)
    return np.exp(logs)  # p rounding to 1 still works: q's floor sends every k < n to 0


def _useful_rate(c: Cluster, alive: np.ndarray) -> np.ndarray:
    """Work per wall second with `alive` nodes: ρ(a) (1 − a c(a) / node_mtbf), 0 with none."""
    rho = c.step_s / c.step_alive_s(alive)
    busy = np.clip(alive * c.shrink_cost_s(alive) / c.node_mtbf_s, 0.0, 1.0)
    return np.where(alive > 0, rho * (1.0 - busy), 0.0)


def shrink_work_s(c: Cluster, duration_s: float) -> float:
    """Expected useful work (full-size step seconds) of a shrinking job over `duration_s`."""
    x, w = np.polynomial.legendre.leggauss(_QUADRATURE_POINTS)
    t = 0.5 * duration_s * (x + 1.0)
    rate_of_alive = _useful_rate(c, np.arange(c.nodes + 1, dtype=float))
    # one time point at a time: memory stays O(nodes)
    rate = [float(_binomial_pmf(c.nodes, np.exp(-ti / c.node_mtbf_s)) @ rate_of_alive)
            for ti in t]
    return float(0.5 * duration_s * np.dot(w, rate))


def shrink_goodput(c: Cluster) -> float:
    return shrink_work_s(c, c.horizon_s) / c.horizon_s


def grow_goodput(c: Cluster) -> float:
    """Shrink, and every G re-grow to full size from spares (checkpoint + restart) if needed."""
    g = c.grow_every_s
    p_any = -math.expm1(-c.nodes * g / c.node_mtbf_s)
    return shrink_work_s(c, g) / (g + p_any * (c.checkpoint_s + c.restart_s))


# ---- all four -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    """The checkpoint intervals the restart strategies use, in whole steps."""

    young_s: float
    daly_s: float
    optimal_steps: int
    user_steps: int


def plan(c: Cluster) -> Plan:
    m = c.system_mtbf_s
    daly = daly_interval_s(c.checkpoint_s, m) if c.checkpoint_s > 0 else c.step_s
    return Plan(young_s=young_interval_s(c.checkpoint_s, m), daly_s=daly,
                optimal_steps=interval_in_steps(daly, c.step_s),
                user_steps=c.user_interval_steps)


def closed_forms(c: Cluster) -> dict[str, float]:
    p = plan(c)
    m = c.system_mtbf_s
    return {
        "restart-optimal": restart_goodput(p.optimal_steps * c.step_s, c.checkpoint_s,
                                           c.restart_s, m),
        "restart-user": restart_goodput(p.user_steps * c.step_s, c.checkpoint_s,
                                        c.restart_s, m),
        "shrink": shrink_goodput(c),
        "shrink-grow": grow_goodput(c),
    }

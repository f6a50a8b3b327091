"""Max-min fair rates of flows sharing links: progressive filling, vectorised over CSR routes.

Every unfrozen flow's rate rises at the same speed; a flow puts `frac` of its rate on each link
of its route (fluid multipath splits it over equal-cost paths). When a link fills up, every flow
crossing it is frozen at its current rate (that link is its bottleneck); the others keep rising.
This is the classical water-filling definition of max-min fairness (Bertsekas & Gallager, Data
Networks, 6.5.2); each round saturates at least one link, so there are at most L rounds, and in
the regular steps of all-reduce schedules usually one to three.
"""

from __future__ import annotations

import numpy as np

# Links whose fair share is within this relative distance of the round's minimum saturate in the
# same round: flows that tie mathematically must tie numerically, or logs stop being exact.
TIE_REL = 1e-9


def max_min_rates(
    flow_ptr: np.ndarray, link: np.ndarray, frac: np.ndarray, capacity: np.ndarray
) -> np.ndarray:
    """Rate of every flow (in the units of `capacity`) under weighted max-min fairness.

    flow_ptr (F+1,), link (nnz,), frac (nnz,) describe each flow's links as CSR; capacity (L,)
    holds each link's capacity. A flow with no links (same host) is unconstrained: rate inf.
    """
    n_flows = int(flow_ptr.shape[0]) - 1
    n_links = int(capacity.shape[0])
    rate = np.zeros(n_flows, dtype=np.float64)
    counts = np.diff(flow_ptr)
    entry_flow = np.repeat(np.arange(n_flows, dtype=np.int64), counts)
    keep = frac > 0
    e_flow, e_link, e_frac = entry_flow[keep], link[keep], frac[keep]
    constrained = np.zeros(n_flows, dtype=bool)
    constrained[e_flow] = True
    rate[~constrained] = np.inf
    residual = capacity.astype(np.float64, copy=True)
    level = 0.0  # common rate of all flows still rising
    frozen = np.zeros(n_flows, dtype=bool)
    while e_flow.shape[0]:
        weight = np.bincount(e_link, weights=e_frac, minlength=n_links)
        used = np.flatnonzero(weight > 0)
        share = residual[used] / weight[used]
        step = float(share.min())
        level += step
        residual[used] -= weight[used] * step
        saturated = used[share <= step * (1.0 + TIE_REL)]
        residual[saturated] = 0.0
        hit = np.zeros(n_links, dtype=bool)
        hit[saturated] = True
        newly = e_flow[hit[e_link]]  # repeats are harmless: every copy writes the same level
        rate[newly] = level
        frozen[newly] = True
        alive = ~frozen[e_flow]
        e_flow, e_link, e_frac = e_flow[alive], e_link[alive], e_frac[alive]
    return rate


def link_load(
    flow_ptr: np.ndarray, link: np.ndarray, frac: np.ndarray, rate: np.ndarray, n_links: int
) -> np.ndarray:
    """Traffic each link carries when the flows run at `rate` (same units as rate)."""
    counts = np.diff(flow_ptr)
    per_entry = np.repeat(np.where(np.isfinite(rate), rate, 0.0), counts) * frac
    return np.bincount(link, weights=per_entry, minlength=n_links)

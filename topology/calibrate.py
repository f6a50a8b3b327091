"""Fit α, β, γ to measured all-reduce times (a `distnet.bench --json` file), then check the model.

Every closed form is linear in (α, β, γ) once the latency term is folded into α, so the fit is a
linear least-squares problem: row i holds the closed form of record i evaluated at the unit
vectors. Rows are divided by the measured time, i.e. we minimise RELATIVE errors, because the
sizes span six orders of magnitude and plain seconds would let the biggest buffer decide alone.
Coefficients are kept >= 0 by dropping a negative one and refitting the rest (a three-variable
active set, enough here). `sim_vs_measured` replays the real schedules on a star network (one
switch, one NIC of bandwidth 1/β per rank): the model of ranks sharing one machine.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from distnet.errors import UserError
from topology.closed_form import CLOSED_FORMS, closed_form_time
from topology.network import Network, make_network

# tree_pipelined's closed form is only an upper bound (pipeline fill and drain), so it would bias
# the fit; hierarchical needs the node layout, which a bench record does not carry.
FIT_ALGORITHMS = ("naive", "ring", "tree", "recursive_doubling", "rabenseifner")
ITEMSIZE = {"float32": 4, "float64": 8}


@dataclass(frozen=True)
class Fit:
    alpha_s: float
    beta_s_per_byte: float
    gamma_s_per_byte: float
    records: list[dict[str, Any]]  # the records used, each with "model_s" and "error"

    @property
    def bandwidth_gbps(self) -> float:
        return 8e-9 / self.beta_s_per_byte if self.beta_s_per_byte > 0 else float("inf")


STATS = ("avg_s", "median_s", "min_s")


def load_records(path: str, stat: str = "avg_s") -> list[dict[str, Any]]:
    """Records with algorithm, bytes, ranks and `stat` from a bench JSON (a list, or
    {"records": [...]}); the chosen statistic is copied to "t_s", the time that is fitted."""
    if stat not in STATS:
        raise UserError(f"unknown statistic {stat!r} (known: {', '.join(STATS)})")
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not JSON ({e.msg}, line {e.lineno})") from None
    if isinstance(data, dict):
        data = data.get("records")
    if not isinstance(data, list):
        raise UserError(f"{path}: expected a list of benchmark records")
    out = []
    for i, r in enumerate(data):
        if not isinstance(r, dict) or not all(k in r for k in ("algorithm", "bytes", "ranks",
                                                                 stat)):
            raise UserError(f"{path}: record {i} lacks algorithm, bytes, ranks or {stat}")
        try:
            ok = float(r[stat]) > 0 and int(r["bytes"]) > 0 and int(r["ranks"]) >= 1
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise UserError(f"{path}: record {i} has a bad time, size or rank count")
        out.append({**r, "t_s": float(r[stat])})
    return out


def _measured(r: dict[str, Any]) -> float:
    return float(r.get("t_s", r["avg_s"]))


def _usable(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r["algorithm"] in FIT_ALGORITHMS and int(r["ranks"]) > 1]


def _unit_rows(r: dict[str, Any]) -> np.ndarray:
    name, p, n = r["algorithm"], int(r["ranks"]), float(r["bytes"])
    return np.array([closed_form_time(name, p, n, *unit) for unit in np.eye(3)])


def fit(records: list[dict[str, Any]]) -> Fit:
    """Least-squares α, β, γ (non-negative) over the records that have a closed form."""
    used = _usable(records)
    if not used:
        known = ", ".join(FIT_ALGORITHMS)
        raise UserError(f"no records with more than one rank and a closed form ({known})")
    a = np.array([_unit_rows(r) for r in used])
    t = np.array([_measured(r) for r in used])
    a_rel, ones = a / t[:, None], np.ones_like(t)
    free = [0, 1, 2]
    coef = np.zeros(3)
    while free:
        sol, *_ = np.linalg.lstsq(a_rel[:, free], ones, rcond=None)
        if np.all(sol >= 0):
            coef[free] = sol
            break
        free.pop(int(np.argmin(sol)))
    model = a @ coef
    rows = [{**r, "model_s": float(m), "error": float(m / _measured(r) - 1)}
            for r, m in zip(used, model, strict=True)]
    return Fit(float(coef[0]), float(coef[1]), float(coef[2]), rows)


def star(p: int, gbps: float) -> Network:
    """p hosts on one switch, latency-free: ranks on one machine with an α-β-γ cost."""
    names = [("host", i) for i in range(p)] + [("switch", 0)]
    tier = np.r_[np.zeros(p, dtype=np.int64), 1]
    return make_network(f"star-{p}", names, tier, np.arange(p), np.full(p, p),
                        np.array(gbps), np.array(0.0), 0.0)


def sim_vs_measured(f: Fit) -> list[dict[str, Any]]:
    """Replay each fitted record's schedule with the fitted α, β, γ; error against measured."""
    from distnet.allreduce import get_schedule
    from topology.sim import simulate

    out = []
    for r in f.records:
        p, nbytes = int(r["ranks"]), int(r["bytes"])
        itemsize = ITEMSIZE.get(str(r.get("dtype", "float32")), 4)
        sched = get_schedule(r["algorithm"])(p, nbytes // itemsize)
        # beta = 0 (bandwidth not identifiable from the data) becomes a 1 Pb/s link: free bytes
        res = simulate(star(p, min(f.bandwidth_gbps, 1e6)), sched, np.arange(p), routing="ideal",
                       itemsize=itemsize, alpha_s=f.alpha_s, gamma_s_per_byte=f.gamma_s_per_byte)
        out.append({**r, "sim_s": res.time_s, "sim_error": res.time_s / _measured(r) - 1})
    return out


def synthetic_records(alpha_s: float, beta_s_per_byte: float, gamma_s_per_byte: float,
                      ranks: tuple[int, ...] = (2, 3, 4),
                      sizes: tuple[int, ...] = (4096, 65536, 1 << 20, 16 << 20)
                      ) -> list[dict[str, Any]]:
    """Bench-shaped records made from the closed forms themselves (for tests and demos)."""
    return [{"algorithm": a, "bytes": s, "ranks": p, "dtype": "float32",
             "avg_s": closed_form_time(a, p, s, alpha_s, beta_s_per_byte, gamma_s_per_byte)}
            for a in FIT_ALGORITHMS if a in CLOSED_FORMS for p in ranks for s in sizes]


def report(f: Fit, checked: list[dict[str, Any]] | None = None) -> str:
    lines = [
        f"fit over {len(f.records)} records: alpha = {f.alpha_s * 1e6:.3f} us, "
        f"beta = {f.beta_s_per_byte * 1e9:.4f} ns/B ({f.bandwidth_gbps:.2f} Gb/s), "
        f"gamma = {f.gamma_s_per_byte * 1e9:.4f} ns/B",
        f"{'algorithm':>20} {'ranks':>5} {'bytes':>10} {'measured_us':>12} {'closed_us':>10} "
        f"{'err':>7}" + (f" {'sim_us':>10} {'err':>7}" if checked else ""),
    ]
    for i, r in enumerate(f.records):
        line = (f"{r['algorithm']:>20} {r['ranks']:>5} {r['bytes']:>10} "
                f"{_measured(r) * 1e6:>12.1f} {r['model_s'] * 1e6:>10.1f} "
                f"{r['error'] * 100:>6.1f}%")
        if checked:
            c = checked[i]
            line += f" {c['sim_s'] * 1e6:>10.1f} {c['sim_error'] * 100:>6.1f}%"
        lines.append(line)
    errs = np.abs([r["error"] for r in f.records])
    lines.append(f"closed form: median |error| {np.median(errs) * 100:.1f}%, "
                 f"max {errs.max() * 100:.1f}%")
    if checked:
        serr = np.abs([c["sim_error"] for c in checked])
        within = int(np.sum(serr <= 0.20))
        lines.append(f"simulator: median |error| {np.median(serr) * 100:.1f}%, max "
                     f"{serr.max() * 100:.1f}%, {within}/{serr.size} points within 20%")
    return "\n".join(lines)

"""Fit α, β, γ to measured all-reduce times (a `distnet.bench --json` file), then check the model.

Every algorithm's cost (`distnet.allreduce.cost`) is linear in (α, β, γ) once the latency term is
folded into α, so the fit is a linear least-squares problem: row i holds the cost terms of
record i (its steps, bytes and reduced bytes). Rows are divided by the measured time, i.e. we
minimise RELATIVE errors, because the sizes span six orders of magnitude and plain seconds would
let the biggest buffer decide alone.
Coefficients are kept >= 0 by dropping a negative one and refitting the rest (a three-variable
active set, enough here). `sim_vs_measured` replays the real schedules on a star network (one
switch, one NIC of bandwidth 1/β per rank): the model of ranks sharing one machine.

`fit_machine` is the "machine" model (`calibrate --model machine`): the same least squares, with
the three coefficients split by what the shared-memory transport on a few cores actually does.
Each record's closed-form α, β, γ terms are scaled by numbers read off its schedule:
- α = α0 + α_oversub·[p > cores] + α_rendezvous·[largest message >= EAGER_LIMIT_BYTES]: when
  ranks outnumber cores a message waits for its peer to be scheduled, and Open MPI's shared
  memory transport switches from eager to a rendezvous handshake above 4 KiB;
- β = β_core·max(1, k/cores) + β_bus·k·[buffer > knee], γ = γ·max(1, k/cores): k concurrent
  transfers (byte-weighted over the steps) share the cores, and once the buffer no longer fits
  in cache they also share one DRAM bus; the knee is chosen from powers of two by the fit.
Everything stays linear in the six coefficients, so the fit is exact on data that the model
generated (tests) and needs no iterative optimiser.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from distnet.allreduce import cost
from distnet.common.errors import UserError
from distnet.common.jsonfile import read_json
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
# A bench record outside these is not a measurement (and would make the replay cost unbounded).
MAX_TIME_S = 3600.0
MAX_BYTES = 1 << 40
MAX_RANKS = 1 << 16


def load_records(path: str, stat: str = "avg_s") -> list[dict[str, Any]]:
    """Records with algorithm, bytes, ranks and `stat` from a bench JSON (a list, or
    {"records": [...]}); the chosen statistic is copied to "t_s", the time that is fitted."""
    if stat not in STATS:
        raise UserError(f"unknown statistic {stat!r} (known: {', '.join(STATS)})")
    data = read_json(path, path)
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
            t = float(r[stat])
            ok = (math.isfinite(t) and 0 < t < MAX_TIME_S and 0 < int(r["bytes"]) <= MAX_BYTES
                  and 1 <= int(r["ranks"]) <= MAX_RANKS)
        except (TypeError, ValueError, OverflowError):
            ok = False
        if not ok:
            raise UserError(f"{path}: record {i} has a bad time, size or rank count")
        out.append({**r, "t_s": float(r[stat])})
    return out


def _itemsize(r: dict[str, Any]) -> int:
    return ITEMSIZE.get(str(r.get("dtype", "float32")), 4)


def _measured(r: dict[str, Any]) -> float:
    return float(r.get("t_s", r["avg_s"]))


def _usable(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records a fit can use (more than one rank, a closed form); none is a UserError."""
    used = [r for r in records if r["algorithm"] in FIT_ALGORITHMS and int(r["ranks"]) > 1]
    if not used:
        known = ", ".join(FIT_ALGORITHMS)
        raise UserError(f"no records with more than one rank and a closed form ({known})")
    return used


def _unit_rows(r: dict[str, Any]) -> np.ndarray:
    """Record r's time as a row: time = row @ (α, β, γ)."""
    t = cost.terms(r["algorithm"], int(r["ranks"]), float(r["bytes"]))
    return np.array([t.steps, t.bytes, t.reduced_bytes])


def _nnls_relative(a: np.ndarray, t: np.ndarray) -> np.ndarray:
    """min ||a x / t - 1|| with x >= 0 (drop the most negative coefficient, refit)."""
    a_rel, ones = a / t[:, None], np.ones_like(t)
    free = list(range(a.shape[1]))
    coef = np.zeros(a.shape[1])
    while free:
        sol, *_ = np.linalg.lstsq(a_rel[:, free], ones, rcond=None)
        if np.all(sol >= 0):
            coef[free] = sol
            break
        free.pop(int(np.argmin(sol)))
    return coef


def fit(records: list[dict[str, Any]]) -> Fit:
    """Least-squares α, β, γ (non-negative) over the records that have a closed form."""
    used = _usable(records)
    a = np.array([_unit_rows(r) for r in used])
    coef = _nnls_relative(a, np.array([_measured(r) for r in used]))
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


def _replay(r: dict[str, Any], alpha: float, beta: float, gamma: float) -> dict[str, Any]:
    """Record r with "sim_s" and "sim_error": its schedule replayed on star(p) under α, β, γ."""
    from distnet.allreduce import get_schedule
    from topology.sim import simulate

    p, itemsize = int(r["ranks"]), _itemsize(r)
    sched = get_schedule(r["algorithm"])(p, int(r["bytes"]) // itemsize)
    # beta = 0 (bandwidth not identifiable from the data) becomes a 1 Pb/s link: free bytes
    gbps = min(8e-9 / beta, 1e6) if beta > 0 else 1e6
    res = simulate(star(p, gbps), sched, np.arange(p), routing="ideal", itemsize=itemsize,
                   alpha_s=alpha, gamma_s_per_byte=gamma)
    return {**r, "sim_s": res.time_s, "sim_error": res.time_s / _measured(r) - 1}


def sim_vs_measured(f: Fit) -> list[dict[str, Any]]:
    """Replay each fitted record's schedule with the fitted α, β, γ; error against measured."""
    return [_replay(r, f.alpha_s, f.beta_s_per_byte, f.gamma_s_per_byte) for r in f.records]


def synthetic_records(alpha_s: float, beta_s_per_byte: float, gamma_s_per_byte: float,
                      ranks: tuple[int, ...] = (2, 3, 4),
                      sizes: tuple[int, ...] = (4096, 65536, 1 << 20, 16 << 20)
                      ) -> list[dict[str, Any]]:
    """Bench-shaped records made from the closed forms themselves (for tests and demos)."""
    return [{"algorithm": a, "bytes": s, "ranks": p, "dtype": "float32",
             "avg_s": cost.cost_s(a, p, s, alpha_s, beta_s_per_byte, gamma_s_per_byte)}
            for a in FIT_ALGORITHMS for p in ranks for s in sizes]


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


# ---- the machine model ------------------------------------------------------------------------
# Open MPI's shared-memory BTL sends up to 4 KiB eagerly (copied into the peer's FIFO); bigger
# messages pay a rendezvous handshake first (the bench shows the step at 4096-byte messages).
EAGER_LIMIT_BYTES = 4096
# Candidate cache/DRAM knees (buffer bytes): 64 KiB .. 64 MiB, spanning L2 (1 MiB) to L3 (32 MiB).
KNEES_BYTES = tuple(1 << k for k in range(16, 27))
MACHINE_TERMS = ("alpha_s", "alpha_oversub_s", "alpha_rendezvous_s", "beta_core_s_per_byte",
                 "beta_bus_s_per_byte", "gamma_s_per_byte")


@dataclass(frozen=True)
class Shape:
    """What the machine model reads off a schedule."""

    # port parallelism: a step's bytes over the bytes through its busiest rank port (how many
    # rank-ports' worth of copying run at once), averaged over steps weighted by their bytes
    concurrency: float
    max_message_bytes: int


def schedule_shape(algorithm: str, p: int, nbytes: int, itemsize: int = 4) -> Shape:
    from distnet.allreduce import get_schedule

    sched = get_schedule(algorithm)(p, max(1, nbytes // itemsize))
    k: list[float] = []
    w: list[float] = []
    biggest = 0
    for st in sched.steps():
        if len(st):
            total = float(st.count.sum())
            port = max(np.bincount(st.src, st.count).max(), np.bincount(st.dst, st.count).max())
            k.append(total / port if port > 0 else float(len(st)))
            w.append(total)
            biggest = max(biggest, int(st.count.max()) * itemsize)
    kw = np.asarray(w)
    conc = float(np.dot(k, kw) / kw.sum()) if kw.sum() > 0 else 1.0
    return Shape(conc, biggest)


def _shape_of(r: dict[str, Any]) -> Shape:
    return schedule_shape(r["algorithm"], int(r["ranks"]), int(r["bytes"]), _itemsize(r))


def _factors(p: int, nbytes: int, shape: Shape, cores: int, knee_bytes: int
             ) -> tuple[float, float, float, float]:
    """(oversubscribed, rendezvous, core share, DRAM-bus streams) of one record: the numbers
    that scale the closed form's α, β, γ terms (module docstring)."""
    k = shape.concurrency
    return (float(p > cores), float(shape.max_message_bytes >= EAGER_LIMIT_BYTES),
            max(1.0, k / cores), k * float(nbytes > knee_bytes))


def machine_row(r: dict[str, Any], shape: Shape, cores: int, knee_bytes: int) -> np.ndarray:
    """Record r's time as a row: time = row @ (the six MACHINE_TERMS)."""
    a, b, g = _unit_rows(r)
    over, rndv, share, bus = _factors(int(r["ranks"]), int(r["bytes"]), shape, cores, knee_bytes)
    return np.array([a, a * over, a * rndv, b * share, b * bus, g * share])


@dataclass(frozen=True)
class MachineFit:
    cores: int
    knee_bytes: int
    coef: dict[str, float]  # MACHINE_TERMS -> fitted value
    records: list[dict[str, Any]]  # the records used, each with "model_s", "error", "shape"

    def effective(self, r: dict[str, Any]) -> tuple[float, float, float]:
        """(α, β, γ) of one record under this machine: what a plain α-β-γ replay should use."""
        shape = r.get("shape") or _shape_of(r)
        over, rndv, share, bus = _factors(int(r["ranks"]), int(r["bytes"]), shape, self.cores,
                                          self.knee_bytes)
        c = self.coef
        alpha = c["alpha_s"] + c["alpha_oversub_s"] * over + c["alpha_rendezvous_s"] * rndv
        beta = c["beta_core_s_per_byte"] * share + c["beta_bus_s_per_byte"] * bus
        return alpha, beta, c["gamma_s_per_byte"] * share


def fit_machine(records: list[dict[str, Any]], cores: int | None = None) -> MachineFit:
    """The machine model fitted for every candidate knee; the knee with the least mean squared
    relative error wins (ties: the smaller knee)."""
    cores = cores if cores is not None else (os.cpu_count() or 1)
    if cores < 1:
        raise UserError(f"cores must be >= 1, got {cores}")
    used = _usable(records)
    shapes = [_shape_of(r) for r in used]
    t = np.array([_measured(r) for r in used])
    best: tuple[float, int, np.ndarray, np.ndarray] | None = None
    for knee in KNEES_BYTES:
        a = np.array([machine_row(r, s, cores, knee) for r, s in zip(used, shapes, strict=True)])
        coef = _nnls_relative(a, t)
        model = a @ coef
        score = float(np.mean((model / t - 1) ** 2))
        if best is None or score < best[0] - 1e-15:
            best = (score, knee, coef, model)
    assert best is not None
    _, knee, coef, model = best
    rows = [{**r, "shape": s, "model_s": float(m), "error": float(m / _measured(r) - 1)}
            for r, s, m in zip(used, shapes, model, strict=True)]
    return MachineFit(cores, knee, dict(zip(MACHINE_TERMS, map(float, coef), strict=True)), rows)


def machine_sim_vs_measured(mf: MachineFit) -> list[dict[str, Any]]:
    """Replay each record's schedule through the simulator on star(p) with that record's
    effective α, β, γ (the machine's sharing is in the parameters, the schedule in the replay)."""
    return [_replay(r, *mf.effective(r)) for r in mf.records]


def machine_synthetic_records(mf_coef: dict[str, float], cores: int, knee_bytes: int,
                              ranks: tuple[int, ...] = (2, 3, 4),
                              sizes: tuple[int, ...] = (4096, 65536, 1 << 20, 16 << 20)
                              ) -> list[dict[str, Any]]:
    """Bench-shaped records made by the machine model itself (for tests and demos)."""
    x = np.array([mf_coef[k] for k in MACHINE_TERMS])
    out = []
    for a in FIT_ALGORITHMS:
        for p in ranks:
            for s in sizes:
                r = {"algorithm": a, "bytes": s, "ranks": p, "dtype": "float32"}
                r["avg_s"] = float(machine_row(r, _shape_of(r), cores, knee_bytes) @ x)
                out.append(r)
    return out


def error_summary(errors: list[float], ranks: list[int]) -> dict[int | str, dict[str, float]]:
    """Per world size (and "all"): median and max |error|, and how many points are within 20 %."""
    e, rk = np.abs(np.asarray(errors, dtype=float)), np.asarray(ranks)
    out: dict[int | str, dict[str, float]] = {}
    keys: list[int | str] = [*sorted({int(x) for x in rk}), "all"]
    for key in keys:
        m = e if key == "all" else e[rk == key]
        out[key] = {"median": float(np.median(m)), "max": float(m.max()),
                    "within_20": int(np.sum(m <= 0.20)), "n": int(m.size)}
    return out


def machine_report(mf: MachineFit, checked: list[dict[str, Any]]) -> str:
    c = mf.coef
    lines = [
        f"machine fit over {len(mf.records)} records, {mf.cores} cores, cache/DRAM knee "
        f"{mf.knee_bytes} B: alpha = {c['alpha_s'] * 1e6:.3f} us "
        f"(+{c['alpha_oversub_s'] * 1e6:.3f} us when ranks > cores, "
        f"+{c['alpha_rendezvous_s'] * 1e6:.3f} us rendezvous), "
        f"beta core = {c['beta_core_s_per_byte'] * 1e9:.4f} ns/B, "
        f"beta bus = {c['beta_bus_s_per_byte'] * 1e9:.4f} ns/B, "
        f"gamma = {c['gamma_s_per_byte'] * 1e9:.4f} ns/B",
        f"{'algorithm':>20} {'ranks':>5} {'bytes':>10} {'conc':>5} {'measured_us':>12} "
        f"{'model_us':>10} {'err':>7} {'sim_us':>10} {'err':>7}",
    ]
    for r, ch in zip(mf.records, checked, strict=True):
        lines.append(f"{r['algorithm']:>20} {r['ranks']:>5} {r['bytes']:>10} "
                     f"{r['shape'].concurrency:>5.2f} {_measured(r) * 1e6:>12.1f} "
                     f"{r['model_s'] * 1e6:>10.1f} {r['error'] * 100:>6.1f}% "
                     f"{ch['sim_s'] * 1e6:>10.1f} {ch['sim_error'] * 100:>6.1f}%")
    ranks = [int(r["ranks"]) for r in mf.records]
    for label, errs in (("model", [r["error"] for r in mf.records]),
                        ("simulator", [ch["sim_error"] for ch in checked])):
        summary = error_summary(errs, ranks)
        if len(summary) == 2:  # one world size: "all" would repeat it
            summary.pop("all")
        for key, s in summary.items():
            lines.append(f"{label} p={key}: median |error| {s['median'] * 100:.1f}%, max "
                         f"{s['max'] * 100:.1f}%, {s['within_20']}/{s['n']} points within 20%")
    return "\n".join(lines)

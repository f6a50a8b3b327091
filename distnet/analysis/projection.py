"""What a profiled run would cost on a modelled cluster: weak-scaling projection (pure functions).

Inputs are a profiled metrics file (measured forward/backward/optimiser time of one step at a
known batch per rank, and the gradient size) and a communication model `comm(algorithm, ranks,
nbytes) -> seconds`, normally `simulator_comm`, which replays the real all-reduce schedule on a
`topology` network. Weak scaling: every rank keeps its batch, so compute per step is constant and
only the all-reduce grows with the number of ranks.

Step time without overlap:  forward + backward + allreduce(whole gradient) + optimiser.
Step time with overlap (bucketing, as `distnet.allreduce.bucket` does): the gradient is cut into
buckets, tail first (DDP-style small first bucket). Backward produces gradients at a constant rate
per byte (an MLP layer's backward cost is proportional to its weight count), so bucket i is ready
at forward + backward * (bytes up to and including i) / grad_bytes. Buckets are reduced one after
another on the network: finish_i = max(ready_i, finish_{i-1}) + allreduce(bucket_i). Everything
but what is still in flight when backward ends hides behind compute — at least the last bucket
(the first layers, finished last) is always exposed:
    step = max(forward + backward, finish_last) + optimiser.
Scaling efficiency is step(1 rank) / step(p) = compute / step(p), since one rank communicates
nothing; communication "dominates" from the rank count where it takes at least as long as compute.

Gradient compression (`--compress`, distnet.compress): a profile recorded with a compressor
carries its wire bytes per step as stages — all-reduces that run one after another (fp16: a
4-byte scale agreement, then the 16-bit payload; PowerSGD: P with the uncompressed tensors, then
Q) — and the measured seconds of its encode/decode work, which joins compute (it is on the
critical path). Without overlap the step pays each stage's all-reduce in turn; with overlap a
bucket of b gradient bytes pays every stage at b × (stage bytes / gradient bytes), at least one
element, so each stage keeps its latency per bucket.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from distnet.allreduce.bucket import plan_buckets
from distnet.common.errors import UserError
from distnet.common.units import MIB
from distnet.training.breakdown import last_profiled_run
from distnet.training.metrics import SCHEMA_VERSION, read_metrics

DEFAULT_BUCKET_BYTES = 25 * MIB
DEFAULT_FIRST_BUCKET_BYTES = 1 * MIB

CommFn = Callable[[str, int, int], float]  # (algorithm, ranks, nbytes) -> seconds
STEP_FIELDS = ("forward_s", "backward_s", "optim_s", "allreduce_s", "bytes", "local_samples",
               "world_size")


# ---- what the run measured --------------------------------------------------------------------
@dataclass(frozen=True)
class RunProfile:
    """Per-step phase times (a percentile, median by default) of a profiled run at its batch per
    rank, over full batches only."""

    source: str
    world_size: int
    algorithm: str
    grad_bytes: int
    itemsize: int
    batch_per_rank: int
    steps: int
    forward_s: float
    backward_s: float
    optim_s: float
    allreduce_s: float
    measured_step_s: float  # same percentile of the four phases' sum
    compressor: str = "none"
    # Bytes of each all-reduce stage of one step, summed over buckets (none: the gradient).
    stages: tuple[int, ...] = ()
    compress_s: float = 0.0  # encode/decode seconds per step (same percentile)

    @property
    def wire_stages(self) -> tuple[int, ...]:
        return self.stages or (self.grad_bytes,)

    @property
    def label(self) -> str:
        """How its rows are named: the algorithm, plus the compressor if there is one."""
        return "" if self.compressor == "none" else f"+{self.compressor}"

    @property
    def compute_s(self) -> float:
        return self.forward_s + self.backward_s + self.optim_s

    @property
    def step_s(self) -> float:
        return self.compute_s + self.allreduce_s


def load_profile(path: str, percentile: float = 50.0) -> RunProfile:
    """Read and validate a `--profile` metrics file; every problem is one UserError line."""
    try:
        records = read_metrics(path)
    except OSError as exc:
        raise UserError(f"cannot read metrics file {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise UserError(f"{path} is not a JSON Lines metrics file ({exc})") from None
    return profile_from_records(records, source=path, percentile=percentile)


def profile_from_records(records: list[dict[str, Any]], source: str = "metrics",
                         percentile: float = 50.0) -> RunProfile:
    """The RunProfile of the last profiled run in `records` (see `load_profile`).

    Phase times are the `percentile` over full-batch steps: the median by default; a low one
    (e.g. 10) estimates the uncontended cost when the machine was shared with other jobs.
    """
    if not 0.0 <= percentile <= 100.0:
        raise UserError(f"percentile must be in [0, 100], got {percentile}")
    if not records:
        raise UserError(f"{source}: no records")
    for i, rec in enumerate(records, 1):
        if not isinstance(rec, dict) or "schema" not in rec:
            raise UserError(f"{source}: record {i} has no schema version (written by an older "
                            f"distnet?); rerun training with --profile --metrics")
        if rec["schema"] != SCHEMA_VERSION:
            raise UserError(f"{source}: schema {rec['schema']!r}, this distnet reads schema "
                            f"{SCHEMA_VERSION}; rerun training with --profile --metrics")
    steps, summary = last_profiled_run(records)
    if not steps:
        raise UserError(f"{source}: no per-step records; rerun training with --profile")
    for i, rec in enumerate(steps):
        missing = [k for k in STEP_FIELDS if not isinstance(rec.get(k), (int, float))]
        if missing:
            raise UserError(f"{source}: step record {i + 1} lacks {', '.join(missing)}; "
                            f"rerun training with --profile")
    batch = max(int(r["local_samples"]) for r in steps)
    full = [r for r in steps if int(r["local_samples"]) == batch]
    grad_bytes = int(full[-1]["bytes"])
    itemsize = 4
    if summary and summary.get("param_count"):
        itemsize = max(1, grad_bytes // int(summary["param_count"]))
    if batch < 1 or grad_bytes < itemsize:
        raise UserError(f"{source}: step records show no samples or no gradient bytes")

    def med(key: str) -> float:
        return float(np.percentile([float(r[key]) for r in full], percentile))

    compressor, stages, compress_s = _compression(full, source, med)

    return RunProfile(
        source=source, world_size=int(full[-1]["world_size"]),
        algorithm=str(full[-1].get("algorithm", "?")), grad_bytes=grad_bytes,
        itemsize=itemsize, batch_per_rank=batch, steps=len(steps), forward_s=med("forward_s"),
        backward_s=med("backward_s"), optim_s=med("optim_s"), allreduce_s=med("allreduce_s"),
        measured_step_s=float(np.percentile([sum(float(r[k]) for k in STEP_FIELDS[:4])
                                             for r in full], percentile)),
        compressor=compressor, stages=stages, compress_s=compress_s,
    )


def _compression(full: list[dict[str, Any]], source: str,
                 med: Callable[[str], float]) -> tuple[str, tuple[int, ...], float]:
    """(compressor, stage bytes, compress seconds) of the step records; none if absent."""
    last = full[-1]
    name = last.get("compress", "none")
    if name == "none" or "wire_stages" not in last:
        return "none", (), 0.0
    stages = last["wire_stages"]
    if (not isinstance(name, str) or not isinstance(stages, list) or not stages
            or not all(isinstance(b, int) and 0 < b < 1 << 50 for b in stages)):
        raise UserError(f"{source}: step record has a bad compress/wire_stages field")
    if not all(isinstance(r.get("compress_s"), (int, float)) for r in full):
        raise UserError(f"{source}: step records lack compress_s; rerun with --profile")
    return name, tuple(stages), med("compress_s")


@dataclass(frozen=True)
class ProjectionRow:
    algorithm: str
    ranks: int
    compute_s: float  # forward + backward + optimiser, constant under weak scaling
    comm_s: float  # one all-reduce of the whole gradient
    step_s: float  # no overlap
    exposed_comm_s: float  # with bucketing + overlap: communication not hidden by backward
    step_overlap_s: float
    samples_per_s: float
    samples_per_s_overlap: float
    efficiency: float
    efficiency_overlap: float

    def as_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def compute_step_s(profile: RunProfile, batch_per_rank: int | None = None) -> tuple[float, ...]:
    """(forward, backward, optimiser) seconds of one step at `batch_per_rank` samples per rank.

    Forward and backward scale linearly with the batch from the measured per-sample time; the
    optimiser touches every parameter once per step whatever the batch, so it stays constant.
    """
    b = profile.batch_per_rank if batch_per_rank is None else batch_per_rank
    if b < 1:
        raise UserError(f"batch per rank must be >= 1, got {b}")
    scale = b / profile.batch_per_rank
    return profile.forward_s * scale, profile.backward_s * scale, profile.optim_s


def bucket_bytes_list(grad_bytes: int, itemsize: int, bucket_bytes: int,
                      first_bucket_bytes: int) -> list[int]:
    """Sizes in bytes of the buckets in reduction order (the trainer's own bucket plan)."""
    n = grad_bytes // itemsize
    return [(hi - lo) * itemsize for lo, hi in plan_buckets(n, itemsize, bucket_bytes,
                                                            first_bucket_bytes)]


def overlapped_step_s(forward_s: float, backward_s: float, optim_s: float,
                      bucket_sizes: Sequence[int], bucket_comm_s: Sequence[float]) -> float:
    """Step time under the bucket pipeline of the module docstring."""
    total = float(sum(bucket_sizes)) or 1.0
    done_bytes = 0.0
    finish_s = forward_s
    for size, comm_s in zip(bucket_sizes, bucket_comm_s, strict=True):
        done_bytes += size
        ready_s = forward_s + backward_s * done_bytes / total
        finish_s = max(ready_s, finish_s) + comm_s
    return max(forward_s + backward_s, finish_s) + optim_s


def project(profile: RunProfile, ranks: Sequence[int], algorithms: Sequence[str], comm: CommFn,
            batch_per_rank: int | None = None, bucket_bytes: int = DEFAULT_BUCKET_BYTES,
            first_bucket_bytes: int = DEFAULT_FIRST_BUCKET_BYTES,
            shared_cores: int | None = None) -> list[ProjectionRow]:
    """One row per (algorithm, ranks): weak-scaling step time, throughput and efficiency.

    `shared_cores`: all ranks run on one machine with this many cores (projecting the machine
    the run was measured on). Over-subscribed, the cores must do every rank's compute and
    shared-memory copies in turn, so a step takes at least ranks / cores times one rank's work.
    """
    if not ranks or min(ranks) < 1:
        raise UserError("rank counts must be integers >= 1")
    if shared_cores is not None and shared_cores < 1:
        raise UserError(f"cores must be >= 1, got {shared_cores}")
    fwd, bwd, opt = compute_step_s(profile, batch_per_rank)
    opt += profile.compress_s  # encode/decode: on the critical path, like the optimiser
    batch = profile.batch_per_rank if batch_per_rank is None else batch_per_rank
    compute = fwd + bwd + opt
    sizes = bucket_bytes_list(profile.grad_bytes, profile.itemsize, bucket_bytes,
                              first_bucket_bytes)
    stages = profile.wire_stages
    fractions = [b / profile.grad_bytes for b in stages]

    def bucket_comm_s(alg: str, p: int, size: int) -> float:
        return sum(comm(alg, p, max(profile.itemsize, round(f * size))) for f in fractions)

    rows = []
    for alg in algorithms:
        for p in sorted(set(ranks)):
            comm_s = sum(comm(alg, p, b) for b in stages) if p > 1 else 0.0
            per_bucket = [bucket_comm_s(alg, p, b) if p > 1 else 0.0 for b in sizes]
            step_ov = overlapped_step_s(fwd, bwd, opt, sizes, per_bucket)
            step = compute + comm_s
            if shared_cores is not None and p > shared_cores:
                step = max(step, p / shared_cores * step)
                step_ov = max(step_ov, p / shared_cores * (compute + sum(per_bucket)))
            rows.append(ProjectionRow(
                algorithm=alg + profile.label, ranks=p, compute_s=compute, comm_s=comm_s,
                step_s=step,
                exposed_comm_s=step_ov - compute, step_overlap_s=step_ov,
                samples_per_s=p * batch / step, samples_per_s_overlap=p * batch / step_ov,
                efficiency=compute / step, efficiency_overlap=compute / step_ov,
            ))
    return rows


def crossover(rows: Sequence[ProjectionRow], algorithm: str,
              overlap: bool = False) -> float | None:
    """Rank count where communication (exposed, with overlap) first equals compute, or None.

    Interpolated between the two bracketing projected rank counts, linearly in log(ranks) and
    log(comm/compute), since all-reduce cost grows roughly like a power of p there.
    """
    # step - compute, not comm_s: on an oversubscribed machine time-sharing is also "not compute"
    pts = sorted((r.ranks, ((r.step_overlap_s if overlap else r.step_s) - r.compute_s)
                  / r.compute_s)
                 for r in rows if r.algorithm == algorithm and r.compute_s > 0)
    prev: tuple[int, float] | None = None
    for p, ratio in pts:
        if ratio >= 1.0:
            if prev is None or prev[1] <= 0:
                return float(p)
            lp0, lp1 = math.log(prev[0]), math.log(p)
            lr0, lr1 = math.log(prev[1]), math.log(ratio)
            frac = -lr0 / (lr1 - lr0) if lr1 > lr0 else 1.0
            return float(math.exp(lp0 + frac * (lp1 - lp0)))
        prev = (p, ratio)
    return None


# ---- the simulator as a communication model ---------------------------------------------------
@dataclass(frozen=True)
class NetModel:
    """A network plus how ranks use it; `net` is a `topology.network.Network`."""

    net: Any
    placement: str = "packed"
    routing: str = "ecmp"
    alpha_s: float | None = None  # None: the simulator's default
    gamma_s_per_byte: float | None = None
    seed: int = 0


def check_fits(net: Any, ranks: int) -> None:
    """One rank per host: refuse more ranks than `net` has hosts (topology's own check)."""
    from topology.placement import check_fits as fits

    fits(net, ranks)


def simulated_allreduce_s(model: NetModel, algorithm: str, ranks: int, nbytes: int,
                          itemsize: int) -> float:
    """Seconds to all-reduce nbytes over `ranks` ranks, replaying the schedule in the simulator."""
    from topology.sim import simulate_allreduce

    if ranks <= 1 or nbytes <= 0:
        return 0.0
    run = simulate_allreduce(model.net, algorithm, ranks, nbytes, itemsize,
                             placement=model.placement, routing=model.routing, seed=model.seed,
                             alpha_s=model.alpha_s, gamma_s_per_byte=model.gamma_s_per_byte)
    return float(run.result.time_s)


def simulator_comm(model: NetModel, itemsize: int) -> CommFn:
    """A memoised CommFn backed by the simulator (buckets of equal size are simulated once)."""
    cache: dict[tuple[str, int, int], float] = {}

    def comm(algorithm: str, ranks: int, nbytes: int) -> float:
        key = (algorithm, ranks, nbytes)
        if key not in cache:
            cache[key] = simulated_allreduce_s(model, algorithm, ranks, nbytes, itemsize)
        return cache[key]

    return comm


# ---- one model, many clusters -----------------------------------------------------------------
@dataclass(frozen=True)
class Variant:
    label: str  # e.g. "fat-tree k=16"
    model: NetModel


def compare_topologies(profile: RunProfile, ranks: int, algorithm: str,
                       variants: Sequence[Variant], batch_per_rank: int | None = None,
                       bucket_bytes: int = DEFAULT_BUCKET_BYTES,
                       first_bucket_bytes: int = DEFAULT_FIRST_BUCKET_BYTES,
                       ) -> list[dict[str, Any]]:
    """One row per variant: the same model and rank count on each network/routing/placement."""
    out = []
    for v in variants:
        comm = simulator_comm(v.model, profile.itemsize)
        row = project(profile, [ranks], [algorithm], comm, batch_per_rank, bucket_bytes,
                      first_bucket_bytes)[0]
        out.append({"topology": v.label, "routing": v.model.routing,
                    "placement": v.model.placement, **row.as_dict()})
    return out

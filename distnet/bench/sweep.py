"""All-reduce benchmark, after OSU osu_allreduce and nccl-tests. Run it under mpirun.

    mpirun -n 2 python -m distnet.bench [--sizes 4KiB,1MiB,64MiB] [--algorithms ring,native]
        [--iters N] [--warmup N] [--dtype float32|float64] [--json PATH] [--plot PATH.png]
        [--tune [PATH]]

Timing. Every iteration starts right after a barrier; its time is the *maximum over ranks* of
that rank's wall time inside the all-reduce call (the collective is done only when the slowest
rank is). avg_s / min_s / max_s / median_s are the mean / min / max / median of those
per-iteration times over the timed iterations (warm-up iterations are dropped). The per-rank
times are collected after the loop, so the reduction of timings never sits inside a measurement.
Bandwidths and ratios use avg_s (as OSU and nccl-tests do); *decisions* (the winner per size,
the tune table, the target verdicts) use median_s, which one descheduled iteration on a shared
machine cannot move.

Bandwidth, in GB/s = 1e9 bytes/s as nccl-tests: algbw = S / t; busbw = algbw · 2(p−1)/p, the
rate each rank's link must sustain for a bandwidth-optimal all-reduce (comparable across p).
ratio_to_native = t_native / t (> 1: faster than MPI's own Allreduce).

Correctness. Rank r sends (r + 1) + (i mod 1021) at index i: integers, so every summation order
gives exactly p(p+1)/2 + p·(i mod 1021). The first and last iteration of every (algorithm,
size) are checked; a wrong result is an error exit (status 1), never a row of the table.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from typing import Any, NoReturn

import numpy as np

from distnet.common.errors import UserError
from distnet.common.plotting import pyplot
from distnet.common.units import parse_size

MIB = 1 << 20
PATTERN_PERIOD = 1021  # prime, so a misplaced chunk changes the values at almost every index
DTYPES = {"float32": np.float32, "float64": np.float64}


class WrongResult(Exception):
    """An algorithm produced a wrong sum (agreed on every rank)."""


def parse_sizes(text: str) -> list[int]:
    """Comma-separated sizes, sorted and de-duplicated."""
    parts = [s for s in text.split(",") if s.strip()]
    if not parts:
        raise UserError("--sizes needs at least one size")
    return sorted({parse_size(s) for s in parts})


def default_sizes() -> list[int]:
    """8 B, 16 B, ... ×2 up to 64 MiB (so 4 KiB and 1 MiB, where the targets sit, are in)."""
    return [8 << k for k in range(24)]


def parse_algorithms(text: str, known: list[str]) -> list[str]:
    """Comma-separated algorithm names, in the given order; unknown ones are a UserError."""
    names = [s.strip() for s in text.split(",") if s.strip()]
    if not names:
        raise UserError("--algorithms needs at least one name")
    unknown = [s for s in names if s not in known]
    if unknown:
        raise UserError(f"unknown all-reduce algorithm {unknown[0]!r} (known: {', '.join(known)})")
    return list(dict.fromkeys(names))


def algbw_gbps(nbytes: int, t_s: float) -> float:
    return nbytes / t_s / 1e9


def busbw_gbps(algbw: float, p: int) -> float:
    """Bus bandwidth: algbw · 2(p−1)/p (0 on one rank, where nothing crosses a link)."""
    return algbw * 2 * (p - 1) / p


def default_iters(nbytes: int) -> int:
    """Timed iterations: ~256 MiB of payload per point, between 10 and 200."""
    return max(10, min(200, (256 * MIB) // nbytes))


def default_warmup(iters: int) -> int:
    return max(2, iters // 10)


def available_algorithms() -> dict[str, Callable[..., None]]:
    """Registered algorithms in registration order (native first, auto last)."""
    from distnet.allreduce import ALGORITHMS

    return dict(ALGORITHMS)


class RankParser(argparse.ArgumentParser):
    """argparse that raises UserError instead of printing usage and exiting on every rank."""

    def __init__(self, *args: Any, rank: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rank = rank

    def error(self, message: str) -> NoReturn:
        raise UserError(message)

    def _print_message(self, message: str, file: Any = None) -> None:
        if self.rank == 0:  # --help once, not once per rank
            super()._print_message(message, file)


def build_parser(rank: int = 0) -> argparse.ArgumentParser:
    p = RankParser(prog="python -m distnet.bench", rank=rank,
                description="All-reduce benchmark (run under mpirun). "
                            "Subcommands: `train ...`, `overlap ...`.")
    p.add_argument("--sizes", type=str, default=None,
                   help="comma-separated message sizes, e.g. 8,4KiB,1MiB,64MiB "
                        "(default 8 B to 64 MiB, x4 steps)")
    p.add_argument("--algorithms", type=str, default=None,
                   help="comma-separated algorithms (default: all registered)")
    p.add_argument("--iters", type=int, default=None,
                   help="timed iterations per size (default scales with size)")
    p.add_argument("--warmup", type=int, default=None, help="untimed iterations per size")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    p.add_argument("--json", type=str, default=None, metavar="PATH")
    p.add_argument("--plot", type=str, default=None, metavar="PATH.png")
    p.add_argument("--tune", nargs="?", const="", default=None, metavar="PATH",
                   help="measure every algorithm and write the table auto uses (default "
                        "path: $DISTNET_TUNE_FILE or ~/.cache/distnet/allreduce_tune.json)")
    return p


def parse_args(argv: list[str], rank: int = 0) -> argparse.Namespace:
    """Parse and validate flags; every problem is a UserError (same on every rank)."""
    args = build_parser(rank).parse_args(argv)
    args.sizes = parse_sizes(args.sizes) if args.sizes is not None else default_sizes()
    itemsize = np.dtype(DTYPES[args.dtype]).itemsize
    for s in args.sizes:
        if s % itemsize:
            raise UserError(f"size {s} B is not a multiple of the {args.dtype} item size "
                            f"({itemsize} B)")
    if args.iters is not None and args.iters < 1:
        raise UserError("--iters must be at least 1")
    if args.warmup is not None and args.warmup < 0:
        raise UserError("--warmup must be at least 0")
    if args.plot is not None and not args.plot.endswith(".png"):
        raise UserError("--plot needs a path ending in .png")
    known = list(available_algorithms())
    if args.algorithms is not None:
        args.algorithms = parse_algorithms(args.algorithms, known)
    elif args.tune is not None:
        args.algorithms = [a for a in known if a != "auto"]
    else:
        args.algorithms = known
    if args.plot is not None:
        pyplot()  # refuse a missing matplotlib before measuring, not after
    return args


def time_algorithm(comm: Any, fn: Callable[..., None], base: np.ndarray, buf: np.ndarray,
                   expected: np.ndarray, iters: int, warmup: int) -> np.ndarray:
    """Per-iteration times (max over ranks) of fn on buf; raises WrongResult on every rank."""
    from mpi4py import MPI

    times_s = np.zeros(iters)
    ok = True
    total = warmup + iters
    for it in range(total):
        np.add(base, comm.rank + 1, out=buf)
        comm.Barrier()
        t0 = time.perf_counter()
        fn(comm, buf)
        elapsed_s = time.perf_counter() - t0
        if it >= warmup:
            times_s[it - warmup] = elapsed_s
        if it in (0, total - 1):
            ok = ok and bool(np.array_equal(buf, expected))
    comm.Allreduce(MPI.IN_PLACE, times_s, op=MPI.MAX)
    if not comm.allreduce(ok, op=MPI.LAND):
        raise WrongResult()
    return times_s


def copy_gbps(nbytes: int = 64 * MIB, reps: int = 5) -> float:
    """NumPy copy rate of an nbytes array, bytes copied per second (best of reps), GB/s."""
    src = np.ones(nbytes // 8)
    dst = np.empty_like(src)
    best_s = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best_s = min(best_s, time.perf_counter() - t0)
    return nbytes / best_s / 1e9


def memory_bandwidth(comm: Any) -> dict[str, float]:
    """Copy GB/s with rank 0 alone, and per rank / aggregate with all ranks copying at once."""
    comm.Barrier()
    alone = copy_gbps() if comm.rank == 0 else 0.0
    comm.Barrier()
    together = comm.allgather(copy_gbps())
    return {"mem_copy_gbps_rank0_alone": comm.bcast(alone, root=0),
            "mem_copy_gbps_per_rank_all": float(np.mean(together)),
            "mem_copy_gbps_aggregate_all": float(np.sum(together))}


def measure(comm: Any, algorithms: list[str], sizes: list[int], dtype: Any,
            iters: int | None, warmup: int | None) -> list[dict[str, Any]]:
    """One record per (algorithm, size), without ratio_to_native (see report.add_ratios)."""
    algos = available_algorithms()
    p = comm.size
    records = []
    for nbytes in sizes:
        n = nbytes // np.dtype(dtype).itemsize
        base = (np.arange(n) % PATTERN_PERIOD).astype(dtype)
        expected = base * p + p * (p + 1) // 2
        buf = np.empty_like(base)
        it = iters if iters is not None else default_iters(nbytes)
        wu = warmup if warmup is not None else default_warmup(it)
        for name in algorithms:
            try:
                t = time_algorithm(comm, algos[name], base, buf, expected, it, wu)
            except WrongResult:
                raise WrongResult(f"algorithm {name!r} gave a wrong sum at {nbytes} bytes "
                                  f"on {p} ranks") from None
            avg = float(t.mean())
            alg = algbw_gbps(nbytes, avg)
            records.append({"algorithm": name, "bytes": nbytes, "ranks": p,
                            "dtype": np.dtype(dtype).name, "iters": it,
                            "avg_s": avg, "min_s": float(t.min()), "max_s": float(t.max()),
                            "median_s": float(np.median(t)),
                            "algbw_gbps": alg, "busbw_gbps": busbw_gbps(alg, p)})
    return records


def main(argv: list[str] | None = None) -> int:
    """Entry point on every rank: returns 0, 1 (wrong result) or 2 (user error)."""
    from mpi4py import MPI

    from distnet.bench import report

    comm = MPI.COMM_WORLD
    rank = comm.rank
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = parse_args(argv, rank)
        result = report.run(comm, args)
    except UserError as e:
        if rank == 0:
            print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    except WrongResult as e:
        if rank == 0:
            print(f"error: {e}", file=sys.stderr, flush=True)
        return 1
    if rank == 0:
        print(result, flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())

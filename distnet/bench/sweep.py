"""All-reduce benchmark, after OSU osu_allreduce and nccl-tests. Run it under mpirun.

    mpirun -n 2 python -m distnet.bench [--sizes 4KiB,1MiB,64MiB | -b 8 -e 64MiB -f 2]
        [--algorithms ring,native] [--iters N] [--warmup N] [--dtype float32|float64]
        [--json PATH] [--csv PATH] [--plot PATH.png] [--tune [PATH]] [--min-busbw GBPS]

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

In-place and out-of-place, as nccl-tests: the in-place columns (avg/min/max/p50/p99) reduce the
buffer in place, the algorithms' own contract; out-of-place leaves a send buffer untouched and
writes a receive buffer: MPI's own `Allreduce(send, recv)` for native, copy-then-reduce-in-place
for the schedules (so their out-of-place time includes that local copy, as it would in any
in-place algorithm behind an out-of-place API). --tune measures in place only, the algorithms
taking turns at each size (measure_interleaved); so is auto, against every algorithm it could
have picked, in the run that judges it.

Correctness. Rank r sends (r + 1) + (i mod 1021) at index i: integers, so every summation order
gives exactly p(p+1)/2 + p·(i mod 1021). The first and last iteration of every (algorithm,
size, placement) are checked; `#wrong` is the number of elements that differ from that closed
form, summed over ranks (the larger of the two checks). Any wrong element makes the run exit
with status 1 after the table is printed. --min-busbw G exits with status 3 when an algorithm's
busbw at the largest size (median time) is below G GB/s: a cluster acceptance gate.
"""

from __future__ import annotations

import argparse
import csv
import math
import socket
import sys
import time
from collections.abc import Callable
from typing import Any, NoReturn

import numpy as np

from distnet.common.errors import UserError
from distnet.common.memory import check_fits
from distnet.common.plotting import pyplot
from distnet.common.threads import allowed_cpus
from distnet.common.units import MIB, human_bytes, parse_size

MAX_SIZES = 200  # a step factor of 1.0001 must not plan a million sizes
MAX_ITERS = 1_000_000  # timed iterations per size: more is a typo, not a measurement
PATTERN_PERIOD = 1021  # prime, so a misplaced chunk changes the values at almost every index
DTYPES = {"float32": np.float32, "float64": np.float64}


def parse_sizes(text: str) -> list[int]:
    """Comma-separated sizes, sorted and de-duplicated."""
    parts = [s for s in text.split(",") if s.strip()]
    if not parts:
        raise UserError("--sizes needs at least one size")
    return sorted({parse_size(s) for s in parts})


def default_sizes() -> list[int]:
    """8 B, 16 B, ... ×2 up to 64 MiB (so 4 KiB and 1 MiB, where the targets sit, are in)."""
    return [8 << k for k in range(24)]


def geometric_sizes(min_bytes: int, max_bytes: int, factor: float, itemsize: int) -> list[int]:
    """nccl-tests' -b/-e/-f: min, min·f, min·f², … up to max, each a whole number of items."""
    if min_bytes > max_bytes:
        raise UserError(f"--min-bytes {min_bytes} is larger than --max-bytes {max_bytes}")
    if not (math.isfinite(factor) and factor > 1.0):
        raise UserError(f"--step-factor must be a number > 1, got {factor}")
    sizes: list[int] = []
    s = float(min_bytes)
    while s <= max_bytes and len(sizes) < MAX_SIZES:
        sizes.append(max(itemsize, int(s) // itemsize * itemsize))
        s *= factor
    return sorted(set(sizes))


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


# `NAME@window` times NAME on a buffer NAME allocates itself (`fn.buffer(comm, n, dtype)`, the
# flat gradient buffer the trainers use), instead of on private memory: for `shm` that buffer
# lies in its shared window and the reduction copies nothing in or out.
WINDOW = "@window"


def is_placed(name: str) -> bool:
    """A row timed on the algorithm's own buffer (auto and the tune table never pick these)."""
    return name.endswith(WINDOW)


def bench_names(algos: dict[str, Callable[..., None]]) -> list[str]:
    """Every name --algorithms accepts: the registered ones, each followed by NAME@window when
    the algorithm can allocate its own buffer."""
    names: list[str] = []
    for name, fn in algos.items():
        names.append(name)
        if callable(getattr(fn, "buffer", None)):
            names.append(name + WINDOW)
    return names


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
    p.add_argument("-b", "--min-bytes", type=str, default=None,
                   help="smallest size, as nccl-tests -b (default 8 when -e or -f is given)")
    p.add_argument("-e", "--max-bytes", type=str, default=None,
                   help="largest size, as nccl-tests -e (default 64MiB)")
    p.add_argument("-f", "--step-factor", type=float, default=None,
                   help="multiply the size by this between points, as nccl-tests -f (default 2)")
    p.add_argument("--algorithms", type=str, default=None,
                   help="comma-separated algorithms (default: all registered)")
    p.add_argument("--iters", type=int, default=None,
                   help="timed iterations per size (default scales with size)")
    p.add_argument("--warmup", type=int, default=None, help="untimed iterations per size")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32",
                   help="element type of the reduced buffers")
    p.add_argument("--json", type=str, default=None, metavar="PATH",
                   help="write every size's timings here as JSON (rank 0)")
    p.add_argument("--csv", type=str, default=None, metavar="PATH",
                   help="one row per (size, algorithm); '-' for standard output")
    p.add_argument("--plot", type=str, default=None, metavar="PATH.png",
                   help="write a busbw-vs-size plot here")
    p.add_argument("--min-busbw", type=float, default=None, metavar="GBPS",
                   help="exit with status 3 if any algorithm's busbw at the largest size is "
                        "below this (GB/s, median time)")
    p.add_argument("--trace", type=str, default=None, metavar="PATH",
                   help="Chrome trace-event JSON of every timed reduction, per rank")
    p.add_argument("--tune", nargs="?", const="", default=None, metavar="PATH",
                   help="measure every algorithm and write the table auto uses (default "
                        "path: $DISTNET_TUNE_FILE or ~/.cache/distnet/allreduce_tune.json)")
    p.add_argument("--tune-passes", type=int, default=3, metavar="N",
                   help="with --tune: full sweeps (default 3); the pick is the fastest in the "
                        "typical pass (median over passes), the file records its spread and a "
                        "near-tie")
    return p


def parse_args(argv: list[str], rank: int = 0) -> argparse.Namespace:
    """Parse and validate flags; every problem is a UserError (same on every rank)."""
    args = build_parser(rank).parse_args(argv)
    itemsize = np.dtype(DTYPES[args.dtype]).itemsize
    ranged = (args.min_bytes, args.max_bytes, args.step_factor) != (None, None, None)
    if ranged and args.sizes is not None:
        raise UserError("give either --sizes or -b/-e/-f, not both")
    if ranged:
        args.sizes = geometric_sizes(parse_size(args.min_bytes or "8"),
                                     parse_size(args.max_bytes or "64MiB"),
                                     2.0 if args.step_factor is None else args.step_factor,
                                     itemsize)
    else:
        args.sizes = parse_sizes(args.sizes) if args.sizes is not None else default_sizes()
    for s in args.sizes:
        if s % itemsize:
            raise UserError(f"size {s} B is not a multiple of the {args.dtype} item size "
                            f"({itemsize} B)")
    if args.iters is not None and args.iters < 1:
        raise UserError("--iters must be at least 1")
    if not 1 <= args.tune_passes <= 20:
        raise UserError(f"--tune-passes must be between 1 and 20, got {args.tune_passes}")
    if args.warmup is not None and args.warmup < 0:
        raise UserError("--warmup must be at least 0")
    for flag, count in (("--iters", args.iters), ("--warmup", args.warmup)):
        if count is not None and count > MAX_ITERS:
            raise UserError(f"{flag} must be at most {MAX_ITERS:,}, got {count:,}")
    # send buffer, its reference copy, the algorithm's scratch and the closed-form check
    check_fits(f"a {max(args.sizes):,}-byte all-reduce", 4 * max(args.sizes))
    if args.min_busbw is not None and not (math.isfinite(args.min_busbw)
                                           and args.min_busbw >= 0):
        raise UserError(f"--min-busbw must be a finite number >= 0, got {args.min_busbw}")
    if args.plot is not None and not args.plot.endswith(".png"):
        raise UserError("--plot needs a path ending in .png")
    known = bench_names(available_algorithms())
    if args.algorithms is not None:
        args.algorithms = parse_algorithms(args.algorithms, known)
    elif args.tune is not None:
        args.algorithms = [a for a in known if a != "auto" and not is_placed(a)]
    else:
        args.algorithms = known
    if args.plot is not None:
        pyplot()  # refuse a missing matplotlib before measuring, not after
    return args


def out_of_place_fn(name: str, fn: Callable[..., None]) -> Callable[..., None]:
    """fn(comm, send, recv): MPI's own out-of-place Allreduce for native, else copy + in place."""
    if name == "native":
        return lambda comm, send, recv: comm.Allreduce(send, recv)

    def run(comm: Any, send: np.ndarray, recv: np.ndarray) -> None:
        np.copyto(recv, send)
        fn(comm, recv)

    return run


def time_algorithm(comm: Any, fn: Callable[..., None], base: np.ndarray, buf: np.ndarray,
                   expected: np.ndarray, iters: int, warmup: int,
                   oop: Callable[..., None] | None = None, observer: Any = None,
                   label: str = "") -> tuple[np.ndarray, int]:
    """Per-iteration times (max over ranks) of fn on buf and the wrong-element count (summed
    over ranks, the larger of the first and last iteration's). With `oop`, the out-of-place
    form oop(comm, send, recv) is timed instead: the send buffer must come out unchanged."""
    from mpi4py import MPI

    times_s = np.zeros(iters)
    wrong = 0
    total = warmup + iters
    send = base + (comm.rank + 1) if oop is not None else None
    for it in range(total):
        if observer is not None:
            observer.begin_step(observer.step + 1)
        if send is None:
            np.add(base, comm.rank + 1, out=buf)
        comm.Barrier()
        if observer is not None:
            observer.reduce_start(0)
        t0 = time.perf_counter()
        if oop is None or send is None:
            fn(comm, buf)
        else:
            oop(comm, send, buf)
        elapsed_s = time.perf_counter() - t0
        if observer is not None:
            observer.reduce_done(0, f"{label} {'out-of-place' if oop else 'in-place'}")
        if it >= warmup:
            times_s[it - warmup] = elapsed_s
        if it in (0, total - 1):
            bad = int(np.count_nonzero(buf != expected))
            if send is not None:
                bad += int(np.count_nonzero(send != base + (comm.rank + 1)))
            wrong = max(wrong, bad)
    comm.Allreduce(MPI.IN_PLACE, times_s, op=MPI.MAX)
    return times_s, int(comm.allreduce(wrong, op=MPI.SUM))


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


def placement(comm: Any) -> list[dict[str, Any]]:
    """Where each rank may run, in rank order: its host and the CPUs its affinity allows."""
    return [{"host": h, "cpus": c} for h, c in comm.allgather((socket.gethostname(),
                                                                allowed_cpus()))]


def stats(prefix: str, t: np.ndarray, wrong: int, nbytes: int, p: int) -> dict[str, Any]:
    """avg/min/max/median(p50)/p99 of the per-iteration times, bandwidths from avg (OSU)."""
    avg = float(t.mean())
    alg = algbw_gbps(nbytes, avg)
    median = float(np.median(t))
    return {f"{prefix}avg_s": avg, f"{prefix}min_s": float(t.min()),
            f"{prefix}max_s": float(t.max()), f"{prefix}median_s": median,
            f"{prefix}p50_s": median, f"{prefix}p99_s": float(np.percentile(t, 99)),
            f"{prefix}algbw_gbps": alg, f"{prefix}busbw_gbps": busbw_gbps(alg, p),
            f"{prefix}wrong": wrong}


def measure(comm: Any, algorithms: list[str], sizes: list[int], dtype: Any,
            iters: int | None, warmup: int | None, out_of_place: bool = False,
            observer: Any = None) -> list[dict[str, Any]]:
    """One record per (algorithm, size), without ratio_to_native (see report.add_ratios).

    In-place fields are avg_s, median_s, …; with out_of_place the same with an oop_ prefix.
    """
    from distnet.common.progress import bar

    algos = available_algorithms()
    p = comm.size
    records = []
    progress = bar(len(sizes) * len(algorithms), "all-reduce sizes", rank=comm.rank)
    for nbytes in sizes:
        n, base, expected, private = _size_inputs(nbytes, dtype, p)
        it = iters if iters is not None else default_iters(nbytes)
        wu = warmup if warmup is not None else default_warmup(it)
        for name in algorithms:
            progress.set_postfix_str(f"{human_bytes(nbytes)} {name}")
            label = f"{name} {human_bytes(nbytes)}"
            fn = algos[name.removesuffix(WINDOW)]
            buf = fn.buffer(comm, n, dtype) if is_placed(name) else private  # type: ignore
            t, wrong = time_algorithm(comm, fn, base, buf, expected, it, wu,
                                      observer=observer, label=label)
            rec = {"algorithm": name, "bytes": nbytes, "ranks": p,
                   "dtype": np.dtype(dtype).name, "iters": it, **stats("", t, wrong, nbytes, p)}
            if out_of_place:
                t, wrong = time_algorithm(comm, fn, base, buf, expected, it, wu,
                                          oop=out_of_place_fn(name, fn),
                                          observer=observer, label=label)
                rec.update(stats("oop_", t, wrong, nbytes, p))
            if buf is not private:
                fn.release(buf)  # type: ignore[attr-defined]  # collective, like buffer()
            records.append(rec)
            progress.update()
    progress.close()
    return records


def _size_inputs(nbytes: int, dtype: Any, p: int) -> tuple[int, np.ndarray, np.ndarray,
                                                             np.ndarray]:
    """(elements, every rank's input pattern, the sum all p ranks must reach, a private
    buffer to reduce in) for one message size of a sweep."""
    n = nbytes // np.dtype(dtype).itemsize
    base = (np.arange(n) % PATTERN_PERIOD).astype(dtype)
    return n, base, base * p + p * (p + 1) // 2, np.empty_like(base)


# Rounds of an interleaved measurement: each algorithm's iterations at a size are split into
# this many batches, run algorithm after algorithm in an order drawn afresh every round.
ROUNDS = 8


def measure_interleaved(comm: Any, algorithms: list[str], sizes: list[int], dtype: Any,
                        iters: int | None, warmup: int | None,
                        rounds: int = ROUNDS, settle: str | None = None) -> list[dict[str, Any]]:
    """One in-place record per (algorithm, size), the algorithms taking turns at each size.

    On a shared machine the load drifts over seconds, and an algorithm timed in one block
    meets a different moment than its neighbour in the table. Here each size's iterations are
    split into `rounds` batches; each round runs every algorithm once, in an order drawn
    afresh for the round, so each sees different positions and neighbours and the same
    stretch of time. Each batch has its own warm-up (the previous algorithm left other data in
    the caches). median_s and the
    other statistics pool the timed iterations of every round; round_medians_s keeps one
    median per round.

    `settle` names an algorithm (auto) whose one-time choice at a size is made before the
    rounds, on the buffer the rounds use: it is called until `auto.deciding` says the choice is
    made (its race, `distnet.allreduce.race`), and its record carries settle_calls and
    settle_s, the calls and the seconds (max over ranks) that took, so the cost is shown, not
    hidden. The rounds then time it as it runs for the rest of a run, as the warm-up
    iterations of OSU and nccl-tests leave a library's own set-up out of its times.
    """
    from distnet.common.progress import bar

    algos = available_algorithms()
    p = comm.size
    records = []
    progress = bar(len(sizes), "all-reduce sizes (interleaved)", rank=comm.rank)
    for nbytes in sizes:
        n, base, expected, private = _size_inputs(nbytes, dtype, p)
        it = iters if iters is not None else default_iters(nbytes)
        turns = min(rounds, it)  # at least one timed iteration per batch
        per = -(-it // turns)
        wu = max(1, (warmup if warmup is not None else default_warmup(it)) // turns)
        fns = {name: algos[name.removesuffix(WINDOW)] for name in algorithms}
        bufs = {name: fn.buffer(comm, n, dtype) if is_placed(name) else private  # type: ignore
                for name, fn in fns.items()}
        times: dict[str, list[np.ndarray]] = {name: [] for name in algorithms}
        wrong = dict.fromkeys(algorithms, 0)
        settled = _settle(comm, fns[settle], bufs[settle], base, nbytes) if settle else {}
        for k in range(turns):
            # A fresh order each round, the same on every rank (seeded). A fixed rotation always
            # put the same algorithm before each one, and a batch may pay for what its
            # predecessor left in the caches and in MPI's state: in a rotation auto always ran
            # after shm and read 3-6 % slower (p = 4) than the algorithm it ran.
            order = np.random.default_rng([nbytes, k]).permutation(len(algorithms))
            for name in (algorithms[j] for j in order):
                t, bad = time_algorithm(comm, fns[name], base, bufs[name], expected, per, wu,
                                        label=f"{name} {human_bytes(nbytes)}")
                times[name].append(t)
                wrong[name] = max(wrong[name], bad)
        for name in algorithms:
            t = np.concatenate(times[name])
            records.append({"algorithm": name, "bytes": nbytes, "ranks": p,
                            "dtype": np.dtype(dtype).name, "iters": int(t.size),
                            "rounds": turns, **stats("", t, wrong[name], nbytes, p),
                            "round_medians_s": [float(np.median(x)) for x in times[name]],
                            **(settled if name == settle else {})})
            if bufs[name] is not private:
                fns[name].release(bufs[name])  # type: ignore[attr-defined]  # collective
        progress.update()
    progress.close()
    return records


def _settle(comm: Any, fn: Callable[..., None], buf: np.ndarray, base: np.ndarray,
            nbytes: int) -> dict[str, Any]:
    """Call auto on buf (reset to this rank's input each time, so the sums stay finite) until
    its choice for nbytes is made; the calls and seconds it took (max over ranks)."""
    from mpi4py import MPI

    from distnet.allreduce import auto

    calls = 0
    spent_s = 0.0
    while auto.deciding(comm, nbytes):  # the same on every rank: the race is deterministic
        np.add(base, comm.rank + 1, out=buf)
        comm.Barrier()
        t0 = time.perf_counter()
        fn(comm, buf)
        spent_s += time.perf_counter() - t0
        calls += 1
    return {"settle_calls": calls, "settle_s": comm.allreduce(spent_s, op=MPI.MAX)}


def wrong_results(records: list[dict[str, Any]]) -> list[str]:
    """One line per record with wrong elements (in place or out of place)."""
    return [f"algorithm {r['algorithm']!r} gave {r.get('wrong', 0) + r.get('oop_wrong', 0)} "
            f"wrong element(s) at {r['bytes']} bytes on {r['ranks']} ranks"
            for r in records if r.get("wrong", 0) or r.get("oop_wrong", 0)]


CSV_FIELDS = ["bytes", "algorithm", "ranks", "dtype", "iters",
              "oop_avg_s", "oop_p50_s", "oop_p99_s", "oop_algbw_gbps", "oop_busbw_gbps",
              "oop_wrong", "avg_s", "min_s", "max_s", "p50_s", "p99_s", "algbw_gbps",
              "busbw_gbps", "wrong", "ratio_to_native"]


def write_csv(path: str, records: list[dict[str, Any]]) -> None:
    """The table's numbers, one row per (size, algorithm); '-' writes to standard output."""
    try:
        f = sys.stdout if path == "-" else open(path, "w", newline="", encoding="utf-8")  # noqa: SIM115
    except OSError as e:
        raise UserError(f"cannot write --csv {path}: {e.strerror}") from None
    try:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in records:
            w.writerow({k: r.get(k, "") for k in CSV_FIELDS})
    finally:
        if f is not sys.stdout:
            f.close()

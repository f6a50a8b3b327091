"""`python -m distnet.bench overlap`: MLP step time with bucket overlap on vs off, same run.

    mpirun -n 2 python -m distnet.bench overlap [--hidden 1024,1024,1024] [--batch 64]
        [--steps 10] [--algorithm native] [--bucket-mb 4] [--first-bucket-mb 1] [--json PATH]

A step is forward + backward + gradient all-reduce (no optimiser: it is the same in every mode).
Modes: overlap off (all buckets start after backward), overlap on (buckets start in backward's
hooks, progressed at each hook), and overlap on plus a progress thread polling between hooks.
Steps alternate between modes so that drift in machine load hits all of them alike. Step time
is the max over ranks of each step's wall time after a barrier, averaged over the timed steps.
Also timed: compute alone (no communication) and communication alone (the same buckets, no
compute), so the ideal overlapped step max(compute, comm) and the serial one compute + comm can
be compared with what overlap achieved.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from distnet.bench.sweep import RankParser
from distnet.common.errors import UserError
from distnet.common.jsonfile import finite
from distnet.common.memory import check_fits
from distnet.common.units import MIB


def build_parser(rank: int = 0) -> argparse.ArgumentParser:
    p = RankParser(prog="python -m distnet.bench overlap", rank=rank,
                description="MLP step time with gradient-bucket overlap on vs off.")
    p.add_argument("--n-in", type=int, default=784, help="input features of the MLP")
    p.add_argument("--hidden", type=str, default="1024,1024,1024,1024",
                   help="hidden layer widths, comma-separated")
    p.add_argument("--n-out", type=int, default=10, help="output classes")
    p.add_argument("--batch", type=int, default=64, help="samples per rank per step")
    p.add_argument("--steps", type=int, default=10, help="timed steps per mode")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per mode")
    p.add_argument("--algorithm", type=str, default="native", help="all-reduce algorithm")
    p.add_argument("--bucket-mb", type=float, default=4.0, help="bucket size in MiB")
    p.add_argument("--first-bucket-mb", type=float, default=1.0,
                   help="size of the first (small) bucket in MiB, as DDP")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32",
                   help="parameter and gradient dtype")
    p.add_argument("--seed", type=int, default=0, help="seed of the model and data")
    p.add_argument("--json", type=str, default=None, metavar="PATH",
                   help="write the step times here as JSON")
    return p


def _timed(comm: Any, fn: Callable[[], None]) -> float:
    """Wall time of fn after a barrier, max over ranks."""
    from mpi4py import MPI

    comm.Barrier()
    t0 = time.perf_counter()
    fn()
    return float(comm.allreduce(time.perf_counter() - t0, op=MPI.MAX))


MAX_STEPS = 1_000_000


def run(comm: Any, args: argparse.Namespace) -> dict[str, Any]:
    from distnet.allreduce.bucket import Bucketer
    from distnet.nn.model import build_mlp, parse_hidden

    if args.steps < 1 or args.warmup < 0 or args.batch < 1:
        raise UserError("--steps and --batch must be >= 1, --warmup >= 0")
    if max(args.steps, args.warmup) > MAX_STEPS:
        raise UserError(f"--steps and --warmup must be at most {MAX_STEPS:,}")
    for flag, value in (("--bucket-mb", args.bucket_mb),
                        ("--first-bucket-mb", args.first_bucket_mb)):
        finite(value, flag, 1e-6, 1e6)
    sizes = [args.n_in, *parse_hidden(args.hidden), args.n_out]
    if min(sizes) < 1:
        raise UserError(f"layer sizes must be positive, got {args.n_in}, {args.hidden}, "
                        f"{args.n_out}")
    n_params = sum((a + 1) * b for a, b in zip(sizes, sizes[1:], strict=False))
    itemsize = np.dtype(args.dtype).itemsize
    check_fits(f"a model of {n_params:,} parameters with batch {args.batch}",
               (6 * n_params + 4 * args.batch * max(sizes)) * itemsize)
    model = build_mlp(args.n_in, parse_hidden(args.hidden), args.n_out, dtype=args.dtype,
                      seed=args.seed)
    rng = np.random.default_rng([args.seed, comm.rank])
    x = rng.standard_normal((args.batch, args.n_in)).astype(args.dtype)
    dout = rng.standard_normal((args.batch, args.n_out)).astype(args.dtype) / args.batch
    bucket_bytes = int(args.bucket_mb * MIB)
    first_bytes = int(args.first_bucket_mb * MIB)

    def bucketer(overlap: bool, progress_thread: bool = False) -> Bucketer:
        return Bucketer(comm, model.grads, model.param_slices, args.algorithm,
                        bucket_bytes=bucket_bytes, first_bucket_bytes=first_bytes,
                        overlap=overlap, progress_thread=progress_thread)

    on, off, threaded = bucketer(True), bucketer(False), bucketer(True, progress_thread=True)

    def step(bucketer: Bucketer | None) -> Callable[[], None]:
        def go() -> None:
            model.zero_grad()
            model.forward(x, train=True)
            model.backward(dout, hook=bucketer.hook if bucketer is not None else None)
            if bucketer is not None:
                bucketer.finish()
        return go

    def comm_only() -> None:
        for lo, hi in reversed(model.param_slices):
            off.hook(lo, hi)
        off.finish()

    modes = {"overlap_on": step(on), "overlap_thread": step(threaded), "overlap_off": step(off),
             "compute_only": step(None), "comm_only": comm_only}
    times: dict[str, list[float]] = {name: [] for name in modes}
    try:
        for i in range(args.warmup + args.steps):
            for name, fn in modes.items():  # interleaved: load drift hits every mode alike
                t = _timed(comm, fn)
                if i >= args.warmup:
                    times[name].append(t)
    finally:
        for b in (on, off, threaded):
            b.close()
    mean = {f"{name}_s": float(np.mean(ts)) for name, ts in times.items()}
    return {
        "ranks": comm.size, "algorithm": args.algorithm, "params": model.n_params,
        "grad_bytes": int(model.grads.nbytes), "buckets": len(on.buckets),
        "batch": args.batch, "hidden": args.hidden, "steps": args.steps,
        **mean,
        "speedup_on_vs_off": mean["overlap_off_s"] / mean["overlap_on_s"],
        "speedup_thread_vs_off": mean["overlap_off_s"] / mean["overlap_thread_s"],
        "ideal_s": max(mean["compute_only_s"], mean["comm_only_s"]),
        "serial_s": mean["compute_only_s"] + mean["comm_only_s"],
    }


def format_result(r: dict[str, Any]) -> str:
    ms = 1e3
    return "\n".join([
        f"# overlap bench: {r['ranks']} ranks, {r['algorithm']}, MLP {r['hidden']} "
        f"({r['params']} params, {r['grad_bytes'] / MIB:.1f} MiB of gradients, "
        f"{r['buckets']} buckets), batch {r['batch']}, {r['steps']} steps per mode",
        f"compute only          {r['compute_only_s'] * ms:9.2f} ms",
        f"communication only    {r['comm_only_s'] * ms:9.2f} ms",
        f"step, overlap off     {r['overlap_off_s'] * ms:9.2f} ms  "
        f"(compute + comm = {r['serial_s'] * ms:.2f} ms)",
        f"step, overlap on      {r['overlap_on_s'] * ms:9.2f} ms  "
        f"(ideal max(compute, comm) = {r['ideal_s'] * ms:.2f} ms)",
        f"step, on + progress thread {r['overlap_thread_s'] * ms:4.2f} ms",
        f"speedup on/off        {r['speedup_on_vs_off']:9.3f}x",
        f"speedup thread/off    {r['speedup_thread_vs_off']:9.3f}x",
    ])


def main(argv: list[str]) -> int:
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    try:
        args = build_parser(comm.rank).parse_args(argv)
        result = run(comm, args)
        if comm.rank == 0 and args.json:
            try:
                with open(args.json, "w", encoding="utf-8") as f:
                    json.dump(result, f, indent=1)
            except OSError as e:
                raise UserError(f"cannot write --json {args.json}: {e.strerror}") from None
    except UserError as e:
        if comm.rank == 0:
            print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    if comm.rank == 0:
        print(format_result(result), flush=True)
    return 0

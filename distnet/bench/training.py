"""Training throughput: distnet vs PyTorch on the same MLP, at several world sizes.

    python -m distnet.bench.training [--world-sizes 1,2] [--steps 100] [--json PATH]

Run it WITHOUT mpirun: for each world size W it starts `mpirun -n W` on itself (a worker mode),
once for distnet and, when `import torch` works, once for PyTorch (plain at W=1, DDP over gloo
otherwise). Model 784-1024-1024-10 ReLU, batch 128 per rank, SGD lr 0.01, float32, random data.
Each rank gets max(1, cores // W) BLAS threads so ranks x threads never exceed the cores.
At world 1 (no gradients to reduce) the SGD step runs inside backward, one GEMM per weight
straight into it (`SGD.update_in_backward`); `--unfused` keeps the separate optimiser step.
A worker times `--repeats` windows of `--steps` steps after a warm-up and reports the best
window, which is the least disturbed by other load on the machine. After each window every rank
times the step's matmuls alone (`BlasLimit`): "step/blas" is the median over windows of a step
window against the BLAS window right after it, so a drift in the machine's speed cancels.

`--compress none,fp16,bf16,powersgd` compares gradient compressors instead (each reducing through
`--allreduce`, launches alternating): samples/s, wire bytes and the ratio to the first one.
`--worker distnet --compressor NAME` is one such rank, runnable under any mpirun (the emulator's).

`--overhead` measures what watching a run costs instead: the same distnet step with nothing
watched, with straggler tracking and stall notes (the defaults of distnet.train), and with
--trace on top (per-layer spans, every reduction, merged to rank 0 at the end). One launch holds
all three and times them window by window in rotating order (none, straggler, trace; then
straggler, trace, none; ...), so a burst of outside load lands on neighbouring windows of every
mode alike; each mode's cost is the median over cycles of its window time divided by the
unwatched window of the same cycle.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from typing import Any

import numpy as np

from distnet.common.errors import UserError
from distnet.common.procgroup import mpirun_python, run_group

N_IN, HIDDEN, N_OUT = 784, [1024, 1024], 10
BATCH_PER_RANK = 128
LR = 0.01
N_BATCHES = 4  # cycled, so the step does not always see one cached batch
OBSERVE_MODES = ("none", "straggler", "trace")
INTERLEAVE = "interleave"  # worker: all of OBSERVE_MODES in one launch, window by window


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m distnet.bench.training", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world-sizes", default="1,2", help="comma-separated, e.g. 1,2")
    ap.add_argument("--steps", type=int, default=100, help="timed steps per window")
    ap.add_argument("--warmup", type=int, default=10, help="untimed steps before each window")
    ap.add_argument("--repeats", type=int, default=3, help="timed windows; the best is kept")
    ap.add_argument("--rounds", type=int, default=1,
                    help="launches per framework and world, alternating; the best is kept")
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch column")
    ap.add_argument("--overhead", action="store_true",
                    help="measure the cost of straggler tracking and --trace instead")
    ap.add_argument("--compress", default=None,
                    help="compare gradient compressors instead (comma-separated, e.g. "
                    "none,fp16,bf16,powersgd): samples/s and ratio to the first")
    ap.add_argument("--unfused", action="store_true",
                    help="at world 1 too: gradients into the flat buffer, then opt.step()")
    ap.add_argument("--reduce", default="shm",
                    help="all-reduce of the plain (uncompressed) distnet step at world > 1 "
                         "(default shm, the single-copy one; native for MPI's own)")
    ap.add_argument("--allreduce", default="ring",
                    help="all-reduce the compressors' payload goes through (with --compress)")
    ap.add_argument("--powersgd-rank", type=int, default=4, help="with --compress powersgd")
    ap.add_argument("--compressor", default=None,
                    help="worker: reduce through this compressor (as --compress does)")
    ap.add_argument("--observe", choices=[*OBSERVE_MODES, INTERLEAVE], default="none",
                    help=argparse.SUPPRESS)
    ap.add_argument("--timeout-s", type=float, default=600, help="per mpirun launch")
    ap.add_argument("--worker", choices=["distnet", "torch"], help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    return ap


def _parse_args(argv: list[str]) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    if args.steps <= 0 or args.warmup < 0 or args.repeats <= 0 or args.rounds <= 0:
        raise UserError("--steps, --repeats and --rounds must be positive, --warmup >= 0")
    return args


def _world_sizes(spec: str) -> list[int]:
    try:
        sizes = [int(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        raise UserError(f"--world-sizes must be comma-separated integers, got {spec!r}") from None
    if not sizes or any(w <= 0 for w in sizes):
        raise UserError(f"--world-sizes must be positive, got {spec!r}")
    return sizes


def _data(rank: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1000 + rank)
    x = rng.standard_normal((N_BATCHES, BATCH_PER_RANK, N_IN), dtype=np.float32)
    y = rng.integers(0, N_OUT, size=(N_BATCHES, BATCH_PER_RANK))
    return x, y


def _report(windows_s: list[float], world: int, steps: int, threads: int) -> dict[str, Any]:
    samples = world * BATCH_PER_RANK * steps
    return {"world": world, "threads_per_rank": threads, "steps": steps,
            "best_samples_per_s": samples / min(windows_s),
            "median_samples_per_s": samples / statistics.median(windows_s)}


def _matmul_flops(batch: int) -> float:
    """FLOPs of one step's matmuls: forward x@W per layer; backward dW = xᵀ@d per layer and
    dx = d@Wᵀ for all but the first (its input needs no gradient), 2·B·n_in·n_out each."""
    widths = [N_IN, *HIDDEN, N_OUT]
    per = [2.0 * batch * a * b for a, b in zip(widths, widths[1:], strict=False)]
    return 3 * sum(per) - per[0]


class BlasLimit:
    """The step's matmuls alone, on arrays shaped as in the step: the BLAS limit of the step.

    No activation, loss, optimiser or all-reduce, only what the BLAS library must do (out=
    buffers, as the layers use, so no allocation either).
    """

    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        widths = [N_IN, *HIDDEN, N_OUT]
        self.xs = [rng.standard_normal((BATCH_PER_RANK, a)).astype(np.float32) for a in widths]
        self.ws = [rng.standard_normal((a, b)).astype(np.float32)
                   for a, b in zip(widths, widths[1:], strict=False)]
        self.dws = [np.empty_like(w) for w in self.ws]
        self.dxs = [np.empty_like(x) for x in self.xs]

    def window_s(self, steps: int) -> float:
        """Seconds per step over one window of `steps` steps."""
        xs, ws, dws, dxs = self.xs, self.ws, self.dws, self.dxs
        t0 = time.perf_counter()
        for _ in range(steps):
            for i, w in enumerate(ws):
                np.matmul(xs[i], w, out=xs[i + 1])  # (B, a) @ (a, b) -> (B, b)
            for i in range(len(ws) - 1, -1, -1):
                np.matmul(xs[i].T, xs[i + 1], out=dws[i])  # dW = xᵀ d
                if i > 0:
                    np.matmul(xs[i + 1], ws[i].T, out=dxs[i])  # dx = d Wᵀ
        return (time.perf_counter() - t0) / steps


def _distnet_worker(args: argparse.Namespace) -> None:
    from mpi4py import MPI

    from distnet.allreduce import get as get_allreduce
    from distnet.nn.losses import softmax_cross_entropy
    from distnet.nn.model import build_mlp
    from distnet.nn.optim import SGD

    comm = MPI.COMM_WORLD
    world = comm.size
    reduce_fn = get_allreduce(args.reduce)
    model = build_mlp(N_IN, HIDDEN, N_OUT, activation="relu", dtype=np.float32, seed=0)
    if world > 1 and args.compressor is None and hasattr(reduce_fn, "buffer"):
        # shm: the gradients live in its shared window, so the reduction copies nothing in
        model.use_grad_buffer(reduce_fn.buffer(comm, model.grads.shape[0], np.float32))
    opt = SGD(model.params, model.grads, lr=LR)
    # Only a lone rank with nothing to reduce may step inside backward: no gradients exist.
    fuse = world == 1 and args.compressor is None and not args.unfused
    xs, ys = _data(comm.rank)
    global_batch = BATCH_PER_RANK * world
    allreduce_s = [0.0]  # summed over every step, warm-up included
    modes = list(OBSERVE_MODES) if args.observe == INTERLEAVE else [args.observe]
    # Built on every rank in the same order: their set-up and finish are collective.
    observers = {m: _observer(comm, m) for m in modes}
    comp = None
    if args.compressor is not None:
        from distnet.compress import get, tensors_of

        n = model.grads.shape[0]
        comp = get(args.compressor)(model.grads, tensors_of(model), [(0, n)],
                                    rank=args.powersgd_rank, seed=0)

    # Time spent inside the arrival/stall hooks themselves, per mode: the direct cost of
    # straggler tracking, which the paired windows can resolve only to about a percent.
    hook_s = dict.fromkeys(modes, 0.0)

    def step(i: int, obs: Any, mode: str) -> None:
        span = obs.span if obs is not None else _no_span
        if obs is not None:
            h0 = time.perf_counter()
            obs.begin_step(i)
            hook_s[mode] += time.perf_counter() - h0
        with span("step", "step"):
            model.zero_grad(clear=False)  # backward overwrites every gradient
            with span("forward", "phase"):
                logits = model.forward(xs[i % N_BATCHES], train=True)
                # Global batch as denom: the SUM all-reduce yields the mean gradient.
                _, dlogits = softmax_cross_entropy(logits, ys[i % N_BATCHES],
                                                   denom=global_batch)
            update = opt.update_in_backward() if fuse else None
            with span("backward", "phase"):
                model.backward(dlogits, update=update)
            if comp is not None:  # every compressor, `none` too, on the same path
                t0 = MPI.Wtime()
                comp.start(comm, 0, model.grads.shape[0], args.allreduce).wait()
                comp.commit()
                allreduce_s[0] += MPI.Wtime() - t0
            elif world > 1:
                t0 = MPI.Wtime()
                if obs is not None:
                    h0 = time.perf_counter()
                    obs.reduce_start(0)
                    hook_s[mode] += time.perf_counter() - h0
                reduce_fn(comm, model.grads)
                if obs is not None:
                    h0 = time.perf_counter()
                    obs.reduce_done(0, args.reduce)
                    hook_s[mode] += time.perf_counter() - h0
                allreduce_s[0] += MPI.Wtime() - t0
            if update is None:
                with span("optimizer", "optim"):
                    opt.step()

    def window(mode: str, first: int, count: int) -> None:
        obs = observers[mode]
        model.recorder = obs if obs is not None and obs.traces_layers else None
        for i in range(first, first + count):
            step(i, obs, mode)

    counter = 0
    for mode in modes:  # every observer warms up (first trace spans, first notes) untimed
        window(mode, counter, args.warmup)
        counter += args.warmup
    hook_s = dict.fromkeys(modes, 0.0)  # timed windows only: first calls set things up
    windows_s: dict[str, list[float]] = {m: [] for m in modes}
    # After each step window a window of its matmuls alone, on every rank at once as in the
    # step: the machine's speed drifts, so the BLAS limit is measured next to each window.
    blas = BlasLimit() if args.observe != INTERLEAVE else None
    blas_s: list[float] = []
    for r in range(args.repeats):
        for mode in modes[r % len(modes):] + modes[:r % len(modes)]:
            comm.Barrier()
            t0 = MPI.Wtime()
            window(mode, counter, args.steps)
            comm.Barrier()
            windows_s[mode].append(MPI.Wtime() - t0)
            counter += args.steps
        if blas is not None:
            blas.window_s(1)  # its first step pays for caches the step window evicted
            comm.Barrier()
            blas_s.append(blas.window_s(args.steps))
    for obs in observers.values():
        if obs is not None:
            obs.finish()  # after the timed windows: the end-of-run gather is not per-step cost
            if obs.trace_path and comm.rank == 0:
                os.remove(obs.trace_path)
    if comm.rank == 0:
        if args.observe == INTERLEAVE:
            steps_run = args.repeats * args.steps
            print(json.dumps({"windows_s": windows_s, "world": world, "steps": args.steps,
                              "threads_per_rank": _threads(),
                              "hook_s_per_step": {m: hook_s[m] / steps_run for m in modes}}),
                  flush=True)
            return
        mine = windows_s[args.observe]
        report = _report(mine, world, args.steps, _threads())
        report["allreduce_ms_per_step"] = 1e3 * allreduce_s[0] / (
            args.warmup + args.repeats * args.steps)
        report["observe"] = args.observe
        report["fused_update"] = fuse
        step_s, best_blas_s = min(mine) / args.steps, min(blas_s)
        paired = [w / args.steps / b for w, b in zip(mine, blas_s, strict=True)]
        report.update(step_ms=1e3 * step_s, blas_ms_per_step=1e3 * best_blas_s,
                      step_over_blas=statistics.median(paired),
                      blas_gflops=_matmul_flops(BATCH_PER_RANK) / best_blas_s / 1e9,
                      step_gflops=_matmul_flops(BATCH_PER_RANK) / step_s / 1e9)
        if comp is not None:
            report.update(compressor=args.compressor, allreduce=args.allreduce,
                          wire_bytes=comp.wire_bytes(), grad_bytes=int(model.grads.nbytes))
        print(json.dumps(report), flush=True)


def _no_span(name: str, cat: str) -> Any:
    return contextlib.nullcontext()


def _observer(comm: Any, mode: str) -> Any:
    """The watching of distnet.train's defaults (straggler + 60 s stall notes), plus a trace."""
    if mode == "none":
        return None
    from distnet.observe.observer import Observer

    # Every rank must build the same pieces (their end is collective); rank 0 writes the file.
    trace = os.path.join(tempfile.gettempdir(), f"dnbench-trace-{os.getpid()}.json")
    return Observer(comm, stall_warn_s=60.0, straggler=True,
                    trace_path=trace if mode == "trace" else None)


def _torch_worker(args: argparse.Namespace) -> None:
    import torch
    import torch.distributed as dist

    rank = int(os.environ.get("OMPI_COMM_WORLD_RANK", "0"))
    world = int(os.environ.get("OMPI_COMM_WORLD_SIZE", "1"))
    torch.set_num_threads(_threads())
    torch.manual_seed(0)
    layers: list[torch.nn.Module] = []
    width = N_IN
    for h in HIDDEN:
        layers += [torch.nn.Linear(width, h), torch.nn.ReLU()]
        width = h
    layers.append(torch.nn.Linear(width, N_OUT))
    model: torch.nn.Module = torch.nn.Sequential(*layers)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{args.port}",
                                rank=rank, world_size=world)
        model = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    loss_fn = torch.nn.CrossEntropyLoss()
    xs_np, ys_np = _data(rank)
    xs, ys = torch.from_numpy(xs_np), torch.from_numpy(ys_np)

    def step(i: int) -> None:
        opt.zero_grad()
        loss_fn(model(xs[i % N_BATCHES]), ys[i % N_BATCHES]).backward()
        opt.step()

    def barrier() -> None:
        if world > 1:
            dist.barrier()

    for i in range(args.warmup):
        step(i)
    windows_s = []
    for _ in range(args.repeats):
        barrier()
        t0 = time.perf_counter()
        for i in range(args.steps):
            step(i)
        barrier()
        windows_s.append(time.perf_counter() - t0)
    if rank == 0:
        print(json.dumps(_report(windows_s, world, args.steps, _threads())), flush=True)
    if world > 1:
        # gloo's background threads can abort() during interpreter teardown ("terminate called
        # without an active exception"); the measurement is done, so leave without teardown.
        barrier()
        sys.stdout.flush()
        os._exit(0)


def _threads() -> int:
    return int(os.environ.get("OMP_NUM_THREADS", "1"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _launch(framework: str, world: int, args: argparse.Namespace,
            observe: str = "none", compressor: str | None = None) -> dict[str, Any]:
    threads = max(1, (os.cpu_count() or 1) // world)
    env = {name: str(threads) for name in
           ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    cmd = mpirun_python(world, "-m", "distnet.bench.training", "--worker", framework,
                        "--steps", str(args.steps), "--warmup", str(args.warmup),
                        "--repeats", str(args.repeats), "--port", str(_free_port()),
                        "--observe", observe, "--reduce", args.reduce,
                        *(["--unfused"] if args.unfused else []))
    if compressor is not None:
        cmd += ["--compressor", compressor, "--allreduce", args.allreduce,
                "--powersgd-rank", str(args.powersgd_rank)]
    done = run_group(cmd, args.timeout_s, env=env)
    if done.timed_out or done.returncode != 0:
        why = "timed out" if done.timed_out else f"exit status {done.returncode}"
        raise RuntimeError(f"{framework} at world {world}: {why}\n{done.stderr[-3000:]}")
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    return dict(json.loads(lines[-1]))


def _table(rows: list[dict[str, Any]]) -> str:
    """samples/s against PyTorch, and the BLAS limit: the step's matmuls alone (rank 0, same
    threads) against the whole step, in ms (best windows) and in GFLOP/s of those matmuls;
    step/blas is the median over windows of each step window against the BLAS window after it."""
    out = [f"{'world':>5} {'threads':>7} {'distnet samples/s':>18} {'torch samples/s':>16} "
           f"{'ratio':>6} {'step_ms':>8} {'blas_ms':>8} {'step/blas':>9} {'blas GF/s':>9} "
           f"{'step GF/s':>9}"]
    for r in rows:
        torch_sps = r.get("torch_samples_per_s")
        torch_txt = f"{torch_sps:16.0f}" if torch_sps else f"{'-':>16}"
        ratio = f"{r['ratio']:6.2f}" if r.get("ratio") else f"{'-':>6}"
        blas = (f" {r['step_ms']:8.2f} {r['blas_ms_per_step']:8.2f} "
                f"{r['step_over_blas']:9.3f} {r['blas_gflops']:9.1f} "
                f"{r['step_gflops']:9.1f}") if r.get("blas_ms_per_step") else ""
        out.append(f"{r['world']:>5} {r['threads_per_rank']:>7} "
                   f"{r['distnet_samples_per_s']:18.0f} {torch_txt} {ratio}{blas}")
    return "\n".join(out)


def _best(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    if not a:
        return b
    return a if a["best_samples_per_s"] >= b["best_samples_per_s"] else b


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Launch every (framework, world) pair and return one row per world size."""
    with_torch = not args.no_torch and importlib.util.find_spec("torch") is not None
    from distnet.allreduce import get as get_allreduce

    get_allreduce(args.reduce)  # an unknown name fails here, before any launch
    rows = []
    for world in _world_sizes(args.world_sizes):
        # Alternate the two frameworks round by round, so a burst of outside load hurts both.
        ours: dict[str, Any] = {}
        theirs: dict[str, Any] = {}
        for _ in range(args.rounds):
            ours = _best(ours, _launch("distnet", world, args))
            if with_torch:
                theirs = _best(theirs, _launch("torch", world, args))
        row: dict[str, Any] = {
            "world": world, "threads_per_rank": ours["threads_per_rank"],
            "batch_per_rank": BATCH_PER_RANK, "steps": args.steps,
            "distnet_samples_per_s": ours["best_samples_per_s"],
            "distnet_median_samples_per_s": ours["median_samples_per_s"],
            "distnet_allreduce_ms_per_step": ours.get("allreduce_ms_per_step", 0.0),
            "step_ms": ours.get("step_ms"), "blas_ms_per_step": ours.get("blas_ms_per_step"),
            "step_over_blas": ours.get("step_over_blas"),
            "blas_gflops": ours.get("blas_gflops"), "step_gflops": ours.get("step_gflops"),
            "fused_update": ours.get("fused_update", False),
        }
        if with_torch:
            row["torch_samples_per_s"] = theirs["best_samples_per_s"]
            row["torch_median_samples_per_s"] = theirs["median_samples_per_s"]
            row["ratio"] = ours["best_samples_per_s"] / theirs["best_samples_per_s"]
        rows.append(row)
    return rows


def overhead(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Per world: each mode's samples/s (best window) and its cost against the unwatched step,
    the median over cycles of (mode window / unwatched window of the same cycle)."""
    rows = []
    for world in _world_sizes(args.world_sizes):
        windows: dict[str, list[float]] = {m: [] for m in OBSERVE_MODES}
        hooks: dict[str, list[float]] = {m: [] for m in OBSERVE_MODES}
        for _ in range(args.rounds):
            got = _launch("distnet", world, args, observe=INTERLEAVE)
            for m in OBSERVE_MODES:
                windows[m] += got["windows_s"][m]
                hooks[m].append(got["hook_s_per_step"][m])
        row = overhead_row(world, args.steps, windows)
        step_s = statistics.median(windows["none"]) / args.steps
        for m in OBSERVE_MODES:  # rank 0's hook time (it also drains the stall notes)
            row[f"{m}_hook_us_per_step"] = 1e6 * statistics.median(hooks[m])
            row[f"{m}_hook_share"] = statistics.median(hooks[m]) / step_s
        rows.append(row)
    return rows


def overhead_row(world: int, steps: int, windows: dict[str, list[float]]) -> dict[str, Any]:
    """One world's overhead figures from per-mode window times listed cycle by cycle."""
    samples = world * BATCH_PER_RANK * steps
    base = windows["none"]
    row: dict[str, Any] = {"world": world, "cycles": len(base)}
    for m in OBSERVE_MODES:
        paired = [t / b for t, b in zip(windows[m], base, strict=True)]
        row[f"{m}_samples_per_s"] = samples / min(windows[m])
        row[f"{m}_ratio_best"] = min(base) / min(windows[m])  # throughput ratio, as before
        row[f"{m}_cost_median"] = statistics.median(paired) - 1.0  # extra time per step
        row[f"{m}_cost_p25_p75"] = _quartiles(paired)
    return row


def _quartiles(xs: list[float]) -> tuple[float, float]:
    if len(xs) < 2:
        return (xs[0] - 1.0, xs[0] - 1.0)
    q = statistics.quantiles(xs, n=4)
    return (q[0] - 1.0, q[2] - 1.0)


def compression(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Per world and compressor: best and median samples/s, bytes, ratio to the first one.

    Launches alternate compressor by compressor, round by round, so outside load hits all alike.
    """
    from distnet.compress import get

    names = [x.strip() for x in args.compress.split(",") if x.strip()]
    for name in names:
        get(name)  # an unknown name: one line listing the known ones
    rows = []
    for world in _world_sizes(args.world_sizes):
        best: dict[str, dict[str, Any]] = {m: {} for m in names}
        medians: dict[str, list[float]] = {m: [] for m in names}
        for _ in range(args.rounds):
            for name in names:
                got = _launch("distnet", world, args, compressor=name)
                best[name] = _best(best[name], got)
                medians[name].append(got["median_samples_per_s"])
        base, base_med = best[names[0]]["best_samples_per_s"], statistics.median(medians[names[0]])
        for name in names:
            rows.append({
                "world": world, "compressor": name, "allreduce": args.allreduce,
                "wire_bytes": best[name]["wire_bytes"], "grad_bytes": best[name]["grad_bytes"],
                "samples_per_s": best[name]["best_samples_per_s"],
                "median_samples_per_s": statistics.median(medians[name]),
                "allreduce_ms_per_step": best[name]["allreduce_ms_per_step"],
                "ratio_best": best[name]["best_samples_per_s"] / base,
                "ratio_median": statistics.median(medians[name]) / base_med})
    return rows


def _compression_table(rows: list[dict[str, Any]]) -> str:
    out = [f"{'world':>5} {'compress':>9} {'wire MB':>8} {'samples/s':>10} {'reduce ms':>10} "
           f"{'x first (best)':>15} {'x first (median)':>17}"]
    for r in rows:
        out.append(f"{r['world']:>5} {r['compressor']:>9} {r['wire_bytes'] / 1e6:8.3f} "
                   f"{r['samples_per_s']:10.0f} {r['allreduce_ms_per_step']:10.2f} "
                   f"{r['ratio_best']:15.3f} {r['ratio_median']:17.3f}")
    return "\n".join(out)


def _overhead_table(rows: list[dict[str, Any]]) -> str:
    out = [f"{'world':>5} {'mode':>10} {'samples/s':>10} {'x none (best)':>14} "
           f"{'cost (median)':>14} {'cost p25..p75':>16} {'hooks us/step':>14} {'hooks/step':>10}"]
    for r in rows:
        for m in OBSERVE_MODES:
            lo, hi = r[f"{m}_cost_p25_p75"]
            out.append(f"{r['world']:>5} {m:>10} {r[f'{m}_samples_per_s']:10.0f} "
                       f"{r[f'{m}_ratio_best']:14.3f} {100 * r[f'{m}_cost_median']:+13.2f}% "
                       f"{100 * lo:+7.2f}..{100 * hi:+.2f}% "
                       f"{r.get(f'{m}_hook_us_per_step', 0.0):14.1f} "
                       f"{100 * r.get(f'{m}_hook_share', 0.0):9.3f}%")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parse_args(sys.argv[1:] if argv is None else argv)
        if args.worker == "distnet":
            _distnet_worker(args)
            return 0
        if args.worker == "torch":
            _torch_worker(args)
            return 0
        if args.overhead:
            rows = overhead(args)
            print(f"cost of watching: {args.rounds} launch(es) x {args.repeats} cycles x "
                  f"{args.steps} steps per window, modes interleaved; straggler = arrival log + "
                  "stall notes (distnet.train's defaults), trace = straggler + --trace; cost = "
                  "extra time per step against the unwatched window of the same cycle")
            print(_overhead_table(rows))
            if args.json:
                with open(args.json, "w") as f:
                    json.dump({"overhead": rows}, f, indent=2)
            return 0
        if args.compress:
            rows = compression(args)
            print(f"gradient compression over {args.allreduce}: MLP {N_IN}-"
                  f"{'-'.join(map(str, HIDDEN))}-{N_OUT}, batch {BATCH_PER_RANK}/rank, best of "
                  f"{args.rounds} x {args.repeats} x {args.steps} steps")
            print(_compression_table(rows))
            if args.json:
                with open(args.json, "w") as f:
                    json.dump({"compression": rows}, f, indent=2)
            return 0
        rows = run(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"MLP {N_IN}-{'-'.join(map(str, HIDDEN))}-{N_OUT}, batch {BATCH_PER_RANK}/rank, "
          f"SGD lr {LR}, float32, best of {args.rounds} x {args.repeats} x {args.steps} steps; "
          f"SGD step {'separate' if args.unfused else 'inside backward at world 1'}")
    print(_table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": [N_IN, *HIDDEN, N_OUT], "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

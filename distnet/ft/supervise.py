"""`python -m distnet.ft.supervise`: restart a dead training job from its latest checkpoint.

    python -m distnet.ft.supervise -n 4 --retries 3 --shrink -- \\
        --epochs 5 --checkpoint-dir ckpt --checkpoint-every 10 --metrics run.jsonl

runs `mpirun -n 4 python -m distnet.train ARGS --ft restart`. When the job dies (any exit
status but 0 and the bad-input status 2), it is started again with `--resume`, which continues
at the checkpoint's position in the epoch; with --shrink each restart uses one rank fewer (down
to --min-ranks), as a scheduler would after losing a node. Position-based sharding makes any
world size able to continue any checkpoint, so a later run may also grow back (--grow-to).
Each restart is recorded in the metrics file as {"event": "restart", ...}. Checkpoints are
written atomically, so a job killed while writing one restarts from the previous one.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time

from distnet.common.cli import Parser
from distnet.common.errors import UserError
from distnet.common.procgroup import mpirun_python, run_job
from distnet.common.runner import EXIT_USER_ERROR
from distnet.ft.resilient import ATTEMPT_ENV
from distnet.training import checkpoint
from distnet.training.metrics import MetricsWriter


def mpirun_cmd(n: int, args: list[str]) -> list[str]:
    return mpirun_python(n, "-m", "distnet.train", *args)


def run_once(cmd: list[str], env: dict[str, str], timeout_s: float) -> int:
    """Run one job in its own process group; a job over its time is killed (status -9), a job
    in which every rank died is status 3 even when mpirun says 0."""
    done = run_job(cmd, timeout_s or None, env=env, capture=False)
    return -signal.SIGKILL if done.timed_out else done.returncode


def option(args: list[str], name: str) -> str | None:
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def redone_steps(metrics: str | None, attempt: int, latest: str | None) -> int | None:
    """Steps the dead attempt finished after its last checkpoint (known with per-step records:
    --track-samples or --profile)."""
    if not metrics or not os.path.exists(metrics):
        return None
    last = -1
    with open(metrics, encoding="utf-8") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by the crash
            if rec.get("event") == "samples" and rec.get("attempt", 0) == attempt:
                last = max(last, int(rec["step"]))
            elif rec.get("event") == "step":
                last = max(last, int(rec["step"]) - 1)
    if last < 0:
        return None
    resumed_at = checkpoint.load(latest)[1]["progress"]["step"] if latest else 0
    return max(0, last + 1 - int(resumed_at))


def supervise(n: int, train_args: list[str], retries: int, shrink: bool, min_ranks: int,
              grow_to: int, timeout_s: float) -> int:
    ckpt_dir = option(train_args, "--checkpoint-dir")
    if not ckpt_dir:
        raise UserError("the supervisor needs --checkpoint-dir in the training arguments")
    metrics = option(train_args, "--metrics")
    args = [a for a in train_args if a != "--resume"]
    if option(args, "--ft") is None:
        args += ["--ft", "restart"]
    resume = "--resume" in train_args
    world = n
    for attempt in range(retries + 1):
        env = dict(os.environ, **{ATTEMPT_ENV: str(attempt)})
        t0 = time.perf_counter()
        status = run_once(mpirun_cmd(world, args + (["--resume"] if resume else [])), env,
                          timeout_s)
        if status == 0:
            if grow_to and world < grow_to:
                print(f"supervise: finished on {world} rank(s)", file=sys.stderr)
            return 0
        if status == EXIT_USER_ERROR:
            print("supervise: bad input (exit 2): not retrying", file=sys.stderr)
            return status
        latest = checkpoint.latest(ckpt_dir) if os.path.isdir(ckpt_dir) else None
        resume = latest is not None
        next_world = max(min_ranks, world - 1) if shrink else world
        if grow_to:
            next_world = grow_to
        record = {"event": "restart", "attempt": attempt + 1,
                  "exit_status": status, "failed_after_s": time.perf_counter() - t0,
                  "from_checkpoint": latest, "world_size": next_world,
                  "old_world_size": world,
                  "redone_steps": redone_steps(metrics, attempt, latest)}
        print(f"supervise: attempt {attempt} exited with status {status}; "
              + (f"restarting from {latest}" if latest else "restarting from scratch")
              + f" on {next_world} rank(s)", file=sys.stderr, flush=True)
        if attempt < retries and metrics:
            writer = MetricsWriter(metrics, append=True)
            writer.write(record)
            writer.close()
        world = next_world
    print(f"supervise: giving up after {retries} restart(s)", file=sys.stderr)
    return 1


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m distnet.ft.supervise",
               description="Restart a training job from its checkpoints.")
    p.add_argument("-n", "--ranks", type=int, default=2, help="ranks of the first run")
    p.add_argument("--retries", type=int, default=3, help="restarts after failures (<= 1000)")
    p.add_argument("--shrink", action="store_true", help="one rank fewer after each failure")
    p.add_argument("--min-ranks", type=int, default=1, help="never shrink below this many ranks")
    p.add_argument("--grow-to", type=int, default=0,
                   help="restart with this many ranks (0: as many as the failed run)")
    p.add_argument("--timeout-s", type=float, default=0.0,
                   help="kill a run after this many seconds (0: never)")
    p.add_argument("train_args", nargs=argparse.REMAINDER,
                   help="-- then the arguments of python -m distnet.train")
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        ns = build_parser().parse_args(argv)
    except UserError as exc:
        print(f"supervise: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    args = ns.train_args[1:] if ns.train_args[:1] == ["--"] else ns.train_args
    if ns.ranks < 1 or ns.retries < 0 or ns.min_ranks < 1:
        print("supervise: error: need -n >= 1, --retries >= 0, --min-ranks >= 1", file=sys.stderr)
        return EXIT_USER_ERROR
    if not 0 <= ns.timeout_s < float("inf") or ns.grow_to < 0 or ns.retries > 1000:
        print(f"supervise: error: need a finite --timeout-s >= 0 (got {ns.timeout_s}), "
              f"--grow-to >= 0, --retries <= 1000", file=sys.stderr)
        return EXIT_USER_ERROR
    try:
        return supervise(ns.ranks, args, ns.retries, ns.shrink, ns.min_ranks, ns.grow_to,
                         ns.timeout_s)
    except UserError as exc:
        print(f"supervise: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())

"""Network and node faults on the emulated cluster: run the real CLI (`python -m topology
emulate run -- python -m distnet.train ...`) under a hard timeout and strike mid-run from the
outside, as the cluster would: kill a host's ranks, take a cable down, cut a link's rate.

The job is the suite's (tests/faults/harness.py) on one epoch; the strike fires once rank 0
has committed `at_step` steps (its `samples` records), so it always lands mid-run.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distnet.training.metrics import read_metrics
from tests.faults.harness import BASE_ARGS, Run
from tests.proc import PYTHON, run

EPOCHS = 1
ARGS = list(BASE_ARGS)
ARGS[ARGS.index("--epochs") + 1] = str(EPOCHS)
SPEC = "leaf-spine:leaves=2,spines=2,hosts=2"
PACE_S = 0.1
STEPS = 34 * EPOCHS  # 3,200 samples in global batches of 96 (3 ranks) or 192 (6 ranks): <= 34
JOB_TIMEOUT_S = 150.0  # a hang guard only: the jobs take seconds to tens of seconds


def cli(prefix: str, *args: str, timeout_s: float = 120.0) -> str:
    """One `python -m topology emulate ...` call that must succeed."""
    res = run([PYTHON, "-m", "topology", "emulate", *args, "--prefix", prefix], timeout_s)
    assert res.returncode == 0 and not res.timed_out, res.stderr[-2000:]
    return res.stdout


@dataclass
class Job:
    run: Run
    wall_s: float
    struck_at_step: int | None
    after_strike_s: float = 0.0  # from the strike to the job's exit
    seen_s: dict[int, float] = field(default_factory=dict)  # committed step -> first seen (s)

    def step_times(self) -> list[float]:
        return [r["forward_s"] + r["backward_s"] + r["allreduce_s"] + r["optim_s"]
                for r in self.run.events("step")]

    def hiccup_s(self) -> float:
        """Longest step after the strike minus the median step before it."""
        steps = self.run.events("step")
        k = self.struck_at_step or 0
        before = [self.step_times()[i] for i, r in enumerate(steps) if r["step"] <= k]
        after = [self.step_times()[i] for i, r in enumerate(steps) if r["step"] > k]
        if not before or not after:
            return 0.0
        return max(after) - statistics.median(before)

    def stall_s(self) -> float:
        """Longest wall-clock gap between two committed steps after the strike minus the median
        gap before it, as the test saw rank 0's samples records appear (polled every 20 ms):
        unlike hiccup_s it includes the wait for the deadline and the recovery."""
        k = self.struck_at_step or 0
        steps = sorted(self.seen_s)
        # two steps seen in one poll: their gap is shared out
        gaps = {b: (self.seen_s[b] - self.seen_s[a]) / (b - a)
                for a, b in zip(steps, steps[1:], strict=False)}
        before = [g for s, g in gaps.items() if s <= k]
        after = [g for s, g in gaps.items() if s > k]
        if not before or not after:
            return 0.0
        return max(after) - statistics.median(before)


def train_job(prefix: str, tmp: Path, name: str, n: int, ranks_per_host: int, ft: str,
              extra: list[str], strike: Any = None, at_step: int = 5,
              attempt: int = 0, timeout_s: float = JOB_TIMEOUT_S,
              fault_step: int | None = None, pace_s: float = PACE_S) -> Job:
    """One training job across emulated hosts; `strike()` runs once step `at_step` is in. An
    injected fault has no strike: `fault_step` (its step) then marks before and after."""
    metrics = tmp / f"{name}.jsonl"
    flags = "--with-ft ulfm" if ft == "ulfm" else ""
    env = {"MPIRUN_FLAGS": f"{flags} -x DISTNET_FT_ATTEMPT", "DISTNET_FT_ATTEMPT": str(attempt)}
    cmd = [PYTHON, "-m", "topology", "emulate", "run", "-n", str(n), "--ranks-per-host",
           str(ranks_per_host), "--timeout", str(int(timeout_s)), "--prefix", prefix, "--",
           PYTHON, "-m", "distnet.train", *ARGS, *pacing(n, pace_s), "--profile", "--metrics",
           str(metrics), "--ft", ft, *extra]
    out: dict[str, Any] = {}

    def job() -> None:
        out["res"] = run(cmd, timeout_s + 30, env=env)

    t0 = time.perf_counter()
    th = threading.Thread(target=job)
    th.start()
    struck, t_strike = None, 0.0
    seen: dict[int, float] = {}
    while th.is_alive():
        done = committed(metrics, attempt)
        seen.setdefault(done, time.perf_counter() - t0)
        if strike is not None and struck is None and done >= at_step:
            t_strike = time.perf_counter()
            strike()
            struck = done
            assert th.is_alive() and committed(metrics, attempt) < STEPS, \
                "the strike came after the job's end"
        else:
            time.sleep(0.02)
    th.join()
    t_end = time.perf_counter()
    res = out["res"]
    (tmp / f"{name}.out").write_text(res.stdout + res.stderr)  # kept for a failure's post-mortem
    assert not res.timed_out, f"job timed out\n{res.stderr[-3000:]}"
    recs = read_metrics(str(metrics)) if metrics.exists() else []
    seen.pop(0, None)  # "nothing yet" is not a step
    # samples records count from 0: the fault of step=S strikes once record S - 1 is in
    if strike is None and fault_step is not None and fault_step - 1 in seen:
        struck, t_strike = fault_step - 1, t0 + seen[fault_step - 1]
    return Job(Run(res, recs, tmp), t_end - t0, struck, t_end - t_strike if struck else 0.0,
               seen)


def pacing(n: int, pace_s: float = PACE_S) -> list[str]:
    """Every rank a little slower, alike (no straggler): a strike from the CLI takes about a
    second to land, and must land mid-run on a fast machine too."""
    return [a for r in range(n) for a in ("--inject", f"slow:rank={r}:step=1:seconds="
                                          f"{pace_s}:steps={STEPS}")]


def committed(metrics: Path, attempt: int) -> int:
    """Steps rank 0 has committed in this attempt so far (0 before the file exists)."""
    try:
        recs = read_metrics(str(metrics))
    except (OSError, ValueError):
        return 0
    steps = [r["step"] for r in recs if r.get("event") == "samples"
             and r.get("attempt", 0) == attempt]
    return max(steps, default=0)


def host_rank_pids(namespace: str) -> list[int]:
    """Training processes inside one emulated host."""
    res = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True,
                         timeout=20)
    pids = []
    for word in res.stdout.split():
        try:
            with open(f"/proc/{word}/cmdline", "rb") as f:
                if b"distnet.train" in f.read():
                    pids.append(int(word))
        except OSError:
            continue  # gone already
    return pids


def kill_host(namespace: str) -> list[int]:
    """A node crash: every rank on the host gets SIGKILL at once."""
    pids = host_rank_pids(namespace)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return pids


def assert_no_orphans(namespaces: list[str]) -> None:
    """No training process outlives its job on any host (allowing the kernel a moment)."""
    deadline = time.monotonic() + 10
    left = [p for ns in namespaces for p in host_rank_pids(ns)]
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = [p for ns in namespaces for p in host_rank_pids(ns)]
    assert not left, f"orphaned training processes: {left}"



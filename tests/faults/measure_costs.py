"""The recovery costs the goodput projection reads (`python -m tests.faults.measure --costs OUT`).

Each is measured on the real CLI or the real checkpoint code of this checkout, as a median of
`repeats`, and written raw (with the sizes measured at); `distnet.analysis.recovery_costs`
validates the file and fits the lines that carry the numbers to other sizes.
- job start: launch to exit of `distnet.train --max-steps 1` on 1, 2 and 4 ranks (what a
  restart pays before the first new step: mpirun, imports, MPI init, data, one step; the exit of
  the dead job is not in it);
- checkpoint write and load: `distnet.training.checkpoint.save/load` (temp file, fsync, rename,
  SHA-256) of 0.02 to 64 MiB in a temporary folder, and a checkpoint's size over the gradient's
  bytes, from a real checkpoint of the suite's job;
- shrink: `recovery_s` (revoke + shrink + rebuild) after a crash on 2, 3 and 4 ranks;
- detection: `waited_s` before a hung rank was declared (the derived deadline) and before a
  crashed one was (the runtime's report).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from distnet.analysis.recovery_costs import FORMAT, costs_from_doc
from distnet.training import checkpoint
from tests.faults.harness import BASE_ARGS, train

JOB_START_RANKS = (1, 2, 4)
SHRINK_RANKS = (2, 3, 4)
CHECKPOINT_BYTES = (15_184, 1 << 20, 16 << 20, 64 << 20)  # the first: the suite's 1,898 float64
SUITE_PARAM_BYTES = 1898 * 8


def _timed_job(d: Path, n: int, *args: str, ft: str) -> tuple[float, Any]:
    d.mkdir(parents=True)
    t0 = time.perf_counter()
    run = train(d, *args, n=n, ft=ft)
    wall = time.perf_counter() - t0
    assert run.events("done"), f"job on {n} ranks failed\n{run.tail()}"
    return wall, run


def job_start(tmp: Path, repeats: int) -> dict[str, Any]:
    med = []
    for n in JOB_START_RANKS:
        walls = [_timed_job(tmp / f"start{n}-{i}", n, "--max-steps", "1", ft="none")[0]
                 for i in range(repeats)]
        med.append(statistics.median(walls))
    return {"ranks": list(JOB_START_RANKS), "median_s": med}


def checkpoint_io(tmp: Path, repeats: int) -> tuple[dict[str, Any], dict[str, Any]]:
    writes, loads = [], []
    rng = np.random.default_rng(0)
    for nbytes in CHECKPOINT_BYTES:
        arrays = {"params": rng.standard_normal(nbytes // 8)}
        w, r = [], []
        for i in range(repeats):
            path = str(tmp / f"ckpt-{nbytes}-{i}.npz")
            t0 = time.perf_counter()
            checkpoint.save(path, arrays, {"step": i})
            t1 = time.perf_counter()
            checkpoint.load(path)
            t2 = time.perf_counter()
            os.unlink(path)
            w.append(t1 - t0)
            r.append(t2 - t1)
        writes.append(statistics.median(w))
        loads.append(statistics.median(r))
    sizes = list(CHECKPOINT_BYTES)
    return {"bytes": sizes, "median_s": writes}, {"bytes": sizes, "median_s": loads}


def checkpoint_ratio(tmp: Path) -> float:
    """Bytes of a real checkpoint of the suite's job (Adam) per byte of its gradient."""
    d = tmp / "ratio"
    _timed_job(d, 1, "--max-steps", "5", "--checkpoint-dir", str(d / "ckpt"),
               "--checkpoint-every", "5", ft="none")
    latest = checkpoint.latest(str(d / "ckpt"))
    assert latest, "no checkpoint written"
    return os.path.getsize(latest) / SUITE_PARAM_BYTES


def shrink_and_detect(tmp: Path, repeats: int) -> tuple[dict[str, Any], dict[str, float]]:
    shrink = []
    crash_waits: list[float] = []
    for n in SHRINK_RANKS:
        rec = []
        for i in range(repeats):
            _, run = _timed_job(tmp / f"shrink{n}-{i}", n, "--inject",
                                f"crash:rank={n - 1}:step=5", ft="ulfm")
            events = run.events("recovery")
            assert events, run.tail()
            rec.append(sum(e["recovery_s"] for e in events))
            crash_waits += [e.get("waited_s", 0.0) for e in events]
        shrink.append(statistics.median(rec))
    hang_waits = []
    for i in range(repeats):
        _, run = _timed_job(tmp / f"hang-{i}", 4, "--inject", "hang:rank=1:step=8", ft="ulfm")
        hang_waits.append(max(e.get("waited_s", 0.0) for e in run.events("recovery")))
    return ({"ranks": list(SHRINK_RANKS), "median_s": shrink},
            {"deadline_s": statistics.median(hang_waits),
             "crash_s": statistics.median(crash_waits)})


def measure_costs(tmp: Path, repeats: int) -> dict[str, Any]:
    write, load = checkpoint_io(tmp, repeats)
    shrink, detect = shrink_and_detect(tmp, repeats)
    doc = {
        "format": FORMAT,
        "measured_with": f"python -m tests.faults.measure {repeats} --costs OUT",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
                   f"{platform.python_version()}; job: {' '.join(BASE_ARGS)}",
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "repeats": repeats,
        "job_start": job_start(tmp, repeats),
        "checkpoint_write": write,
        "checkpoint_load": load,
        "checkpoint_bytes_per_param_byte": checkpoint_ratio(tmp),
        "shrink": shrink,
        "detect": detect,
    }
    costs_from_doc(doc, "measured")  # what we write must be what the CLI accepts
    return doc


def write_costs(path: str, tmp: Path, repeats: int) -> None:
    doc = measure_costs(tmp, repeats)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    print(json.dumps(doc, indent=1))

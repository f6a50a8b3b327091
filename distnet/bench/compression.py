"""Accuracy under gradient compression: the same seeded run with each `--compress`, side by side.

    python -m distnet.bench compression [--ranks 4] [--epochs 5] [--json OUT]

Runs `distnet.train` under `mpirun -n ranks` once per compressor on two tasks — the embedded
synthetic task, and a file dataset written here as .npz (noisy concentric rings in 2-D lifted to
32 features by a fixed random map, 4 classes: a different, non-linear problem read through the
project's .npz loader) — and reports the final validation accuracy and its difference from
`none` in percentage points (embedded task: 16,000 samples). Same seed, same data, same
steps: only the compressor differs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from typing import Any

import numpy as np

from distnet.common.errors import UserError
from distnet.common.procgroup import mpirun_python, run_group

COMPRESSORS = ("none", "fp16", "bf16", "powersgd")
EMBEDDED_SAMPLES = 16000
TRAIN_FLAGS = ["--hidden", "256,256", "--batch-size", "64", "--optimizer", "sgd", "--lr", "0.05",
               "--momentum", "0.9", "--lr-schedule", "cosine", "--allreduce", "ring", "--quiet"]


def write_rings(path: str, n: int = 12000, seed: int = 0) -> None:
    """4 concentric noisy rings (class = ring), mapped to 32 features by a fixed linear map."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, size=n)
    angle = rng.uniform(0, 2 * np.pi, size=n)
    radius = 1.0 + y + rng.normal(0, 0.25, size=n)
    plane = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
    lift = rng.standard_normal((2, 32))
    x = plane @ lift + rng.normal(0, 0.3, size=(n, 32))
    np.savez(path, x=x.astype(np.float32), y=y.astype(np.int64))


def train_once(ranks: int, compressor: str, data: str | None, epochs: int, metrics: str,
               timeout_s: float) -> dict[str, Any]:
    args = ["-m", "distnet.train", *TRAIN_FLAGS, "--epochs", str(epochs), "--compress",
            compressor, "--metrics", metrics]
    args += ["--data", data] if data else ["--samples", str(EMBEDDED_SAMPLES)]
    done = run_group(mpirun_python(ranks, *args), timeout_s)
    if done.timed_out or done.returncode != 0:
        why = "timed out" if done.timed_out else f"exit status {done.returncode}"
        raise RuntimeError(f"--compress {compressor}: {why}\n{done.stderr[-2000:]}")
    with open(metrics) as f:
        records = [json.loads(line) for line in f if line.strip()]
    summary = [r for r in records if r.get("event") == "done"][-1]
    return {"val_acc": summary["val_acc"], "val_loss": summary["val_loss"],
            "steps": summary["steps"], "wall_s": summary["wall_s"]}


def run(ranks: int, epochs: int, timeout_s: float) -> list[dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="dncmp-") as tmp:
        rings = os.path.join(tmp, "rings.npz")
        write_rings(rings)
        for task, data in (("embedded", None), ("rings.npz", rings)):
            base = None
            for name in COMPRESSORS:
                got = train_once(ranks, name, data, epochs, os.path.join(tmp, f"{name}.jsonl"),
                                 timeout_s)
                base = got["val_acc"] if base is None else base
                rows.append({"task": task, "compress": name, "ranks": ranks, "epochs": epochs,
                             **got, "delta_pp": 100 * (got["val_acc"] - base)})
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    out = ["| task | compress | val acc | vs none (pp) | steps |", "|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['task']} | {r['compress']} | {100 * r['val_acc']:.2f}% | "
                   f"{r['delta_pp']:+.2f} | {r['steps']} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m distnet.bench compression",
                                 description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ranks", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--timeout-s", type=float, default=600, help="per training run")
    ap.add_argument("--json", help="write the rows here")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if not 1 <= args.ranks <= 64 or not 1 <= args.epochs <= 100:
            raise UserError("--ranks must be in 1..64 and --epochs in 1..100")
        rows = run(args.ranks, args.epochs, args.timeout_s)
    except UserError as e:
        print(f"python -m distnet.bench compression: error: {e}", file=sys.stderr)
        return 2
    print(table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"accuracy": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

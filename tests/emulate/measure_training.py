"""Benchmark (not a test): training on the emulated network vs distnet.whatif's projection, and
bucket overlap on vs off there. Root; run under the bench lock:

    flock /tmp/distnet-bench.lock python -m tests.emulate.measure_training --out DIR

Brings up leaf-spine 2x2x2 at --link-gbps, trains two model sizes on 4 ranks (ring, --profile),
projects each with whatif on the same spec (rate x the calibrated efficiency, alpha from the
calibration file `emulate validate --calibration` wrote), prints measured vs projected step and
communication times, then runs `distnet.bench overlap`; tears the cluster down.

Placement packed by default: scattered, the ring's two flows each way between the leaves share
a spine or not by the hash of ports the kernel picks at connect time, a coin per direction that
doubles the step or not for the whole run; whatif cannot know those ports (its own hash picks
one outcome), so a scattered comparison measures the coin. Packed, each direction has one flow
between the leaves and no choice matters. (`emulate validate` compares scattered runs on the
paths they really took.)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from distnet.common.procgroup import run_group
from distnet.training.metrics import read_metrics
from topology.emulate import cluster, launch

SPEC = "leaf-spine:leaves=2,spines=2,hosts=2"
MODELS = {"small (0.1 MB)": "128,128", "medium (1.2 MB)": "512,512",
          "large (4.4 MB)": "1024,1024"}


def _steps(path: Path) -> tuple[float, float]:
    recs = [r for r in read_metrics(str(path)) if r.get("event") == "step"][3:]
    step = [r["forward_s"] + r["backward_s"] + r["allreduce_s"] + r["optim_s"] for r in recs]
    return statistics.median(step), statistics.median(r["allreduce_s"] for r in recs)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--link-gbps", type=float, default=0.2)
    ap.add_argument("--calibration", required=True)
    ap.add_argument("--prefix", default="dw-")
    ap.add_argument("--placement", default="packed", choices=("packed", "scattered"))
    ap.add_argument("--models", default=",".join(m.split()[0] for m in MODELS),
                    help="which of small,medium,large")
    ap.add_argument("--no-overlap", action="store_true", help="skip the overlap bench")
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    cal = json.loads(Path(a.calibration).read_text())
    plan = cluster.up(SPEC, a.link_gbps, prefix=a.prefix)
    rows = []
    try:
        wanted = set(a.models.split(","))
        for label, hidden in MODELS.items():
            if label.split()[0] not in wanted:
                continue
            metrics = out / f"train-{hidden.replace(',', 'x')}.jsonl"
            metrics.unlink(missing_ok=True)
            res = launch.run(plan, 4, [sys.executable, "-m", "distnet.train", "--hidden", hidden,
                                       "--samples", "6000", "--epochs", "1", "--max-steps", "25",
                                       "--batch-size", "64", "--allreduce", "ring", "--profile",
                                       "--quiet", "--metrics", str(metrics)],
                             timeout_s=900, placement=a.placement, extra_flags="")
            if res.returncode:
                print(res.stderr[-2000:], file=sys.stderr)
                return 1
            step_s, comm_s = _steps(metrics)
            wi = out / f"whatif-{hidden.replace(',', 'x')}.json"
            w = run_group([sys.executable, "-m", "distnet.whatif", "--metrics", str(metrics),
                           "--topology", SPEC, "--ranks", "4", "--algorithms", "ring",
                           "--placement", a.placement,
                           "--link-gbps", str(a.link_gbps * cal["efficiency"]),
                           "--alpha-us", str(cal["alpha_s"] * 1e6), "--json", str(wi)], 300)
            if w.returncode:
                print(w.stderr[-2000:], file=sys.stderr)
                return 1
            rows.append({"model": label, "hidden": hidden, "measured_step_s": step_s,
                         "measured_comm_s": comm_s, "whatif": json.loads(wi.read_text()),
                         "whatif_text": w.stdout})
            print(f"{label}: measured step {step_s * 1e3:.1f} ms, all-reduce {comm_s * 1e3:.1f} ms")
            print(w.stdout)
        (out / "training.json").write_text(json.dumps(rows, indent=1))
        if a.no_overlap:
            return 0
        ov = out / "overlap.json"
        res = launch.run(plan, 4, [sys.executable, "-m", "distnet.bench", "overlap", "--hidden",
                                   "1024,1024", "--steps", "15", "--algorithm", "ring",
                                   "--json", str(ov)], timeout_s=900, placement=a.placement,
                         extra_flags="")
        print(res.stdout[-3000:])
    finally:
        cluster.down(a.prefix)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Measure recovery per fault type for docs/faults.md: `python -m tests.faults.measure [REPEATS]`,
or the recovery costs the goodput projection reads: `... measure [REPEATS] --costs OUT.json`
(tests/faults/measure_costs.py; docs/recovery-costs.json is its output on this machine).

Runs the suite's job (4 ranks, 2 epochs, seed 3) fault-free and once per fault type per repeat,
and prints a Markdown table: in-run recovery time (revoke + shrink + rebuild, from the metrics),
time waited before a laggard was declared, redone steps, job wall time, and the final
validation loss against the fault-free run.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from distnet.common.progress import bar
from tests.faults.harness import Run, supervise, train

SCENARIOS: list[tuple[str, str, list[str]]] = [
    ("crash (rank 2, step 5)", "ulfm", ["--inject", "crash:rank=2:step=5"]),
    ("crash of rank 0", "ulfm", ["--inject", "crash:rank=0:step=30"]),
    ("crash inside the all-reduce", "ulfm", ["--inject", "crash:rank=3:step=7:at=allreduce"]),
    ("SIGKILL from another process", "ulfm", ["--inject", "kill:rank=3:step=9"]),
    ("crash during recovery (2 ranks)", "ulfm",
     ["--inject", "crash:rank=2:step=6", "--inject", "crash:rank=3:step=6:at=recovery"]),
    ("hang (derived deadline)", "ulfm", ["--inject", "hang:rank=1:step=8"]),
    ("straggler past a 3 s deadline", "ulfm",
     ["--deadline-s", "3", "--inject", "slow:rank=2:step=8:seconds=60"]),
    ("NaN gradient", "ulfm", ["--inject", "nan:rank=3:step=4"]),
    ("bit flip in flight", "ulfm", ["--inject", "bitflip:rank=1:step=6"]),
    ("dropped message (ring, 4 s deadline)", "ulfm",
     ["--allreduce", "ring", "--deadline-s", "4", "--inject", "drop:rank=1:step=5"]),
    ("delayed messages (4 x 50 ms)", "ulfm",
     ["--inject", "delay:rank=2:step=3:seconds=0.05:steps=4"]),
    ("restart from checkpoint", "restart", ["--inject", "crash:rank=2:step=12"]),
    ("restart on 3 ranks", "restart+shrink", ["--inject", "kill:rank=3:step=17"]),
]


def one_run(d: Path, mode: str, args: list[str]) -> tuple[Run, float]:
    """A job and its wall time from launch to exit."""
    d.mkdir()
    t0 = time.perf_counter()
    if mode.startswith("restart"):
        extra = ["--shrink"] if mode.endswith("shrink") else []
        run = supervise(d, "--checkpoint-every", "5", *args, extra=extra)
    else:
        run = train(d, *args, name="run")
    return run, time.perf_counter() - t0


def main(repeats: int = 3) -> None:
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        refs = [one_run(tmp / f"ref{i}", "ulfm", []) for i in range(repeats)]
        ref_loss = refs[0][0].one("done")["val_loss"]
        ref_wall = statistics.median(w for _, w in refs)
        print(f"fault-free: val_loss {ref_loss:.6f}, job wall {ref_wall:.2f} s (median of "
              f"{repeats})\n")
        print("| fault | recovery (ms) | waited before declaring (s) | redone steps | "
              "job wall (s) | val_loss diff vs fault-free |")
        print("|---|---|---|---|---|---|")
        # On a terminal, a bar over every run (it clears itself; the table is on stdout).
        progress = bar(len(SCENARIOS) * repeats, "fault scenarios", unit="run")
        for k, (label, mode, args) in enumerate(SCENARIOS):
            rec_ms, waited, redone, walls, diffs = [], [], [], [], []
            for i in range(repeats):
                progress.set_postfix_str(label)
                run, wall = one_run(tmp / f"s{k}-{i}", mode, args)
                progress.update()
                done = run.events("done")
                ft = run.events("ft_done")
                if not done or not ft:
                    progress.write(f"| {label} | FAILED run {i} | | | | |")
                    continue
                recs = run.events("recovery")
                rec_ms.append(1e3 * sum(e["recovery_s"] for e in recs))
                waited.append(max([e.get("waited_s", 0.0) for e in recs] or [0.0]))
                restarts = run.events("restart")
                redone.append(ft[-1]["redone_steps"] + sum(r.get("redone_steps") or 0
                                                           for r in restarts))
                walls.append(wall)
                diffs.append((done[-1]["val_loss"] - ref_loss) / ref_loss)
            if not walls:
                continue
            rec = "-" if mode.startswith("restart") else f"{statistics.median(rec_ms):.1f}"
            progress.write(f"| {label} | {rec} | {statistics.median(waited):.2f} | "
                  f"{statistics.median(redone):g} | {statistics.median(walls):.2f} | "
                  f"{max(diffs, key=abs):+.2e} |")
        progress.close()


def cli(argv: list[str]) -> None:
    import argparse

    p = argparse.ArgumentParser(prog="python -m tests.faults.measure")
    p.add_argument("repeats", nargs="?", type=int, default=3, help="runs per measurement")
    p.add_argument("--costs", metavar="OUT", help="measure the recovery costs into this JSON file")
    args = p.parse_args(argv)
    if args.costs:
        from tests.faults.measure_costs import write_costs

        with tempfile.TemporaryDirectory() as tmp:
            write_costs(args.costs, Path(tmp), args.repeats)
    else:
        main(args.repeats)


if __name__ == "__main__":
    cli(sys.argv[1:])

"""Recovery time and step-time hiccup of the network-fault scenarios on the emulated cluster,
for docs/faults.md: `python -m tests.faults.measure_network [REPEATS]` (root, namespaces).

Same jobs and strikes as tests/faults/test_network_faults.py. Per scenario, medians over the
repeats of: the in-run recovery (revoke + shrink, from the recovery records) and the time
waited before the fault was declared; the step-time hiccup (the longest step after the strike
minus the median step before it, from the --profile step records); for abort-and-restart, the
time from the strike to the aborted job's exit and the wall time of the resumed job.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from tests.emulate.conftest import SKIP, unique_prefix
from tests.faults.netfaults import SPEC, Job, cli, kill_host
from tests.faults.test_network_faults import (
    CKPT_EVERY,
    DEADLINE,
    PARTITION_TIMEOUT_S,
    Emulated,
    link,
)


def scenarios(e: Emulated) -> list[tuple[str, dict, Callable[[Path], list[str]] | None]]:
    def ck(d: Path) -> list[str]:
        return [*DEADLINE, "--checkpoint-dir", str(d / "ckpt"), "--checkpoint-every",
                CKPT_EVERY]

    return [
        ("node crash (2 ranks/host, 6 -> 4)", dict(n=6, rph=2, ft="ulfm",
                                                  strike=lambda: kill_host(e.hosts[2])), None),
        ("partition: h2's only cable down", dict(n=3, rph=1, ft="ulfm",
                                                 strike=link(e, "down", "h2", "leaf1"),
                                                 timeout_s=PARTITION_TIMEOUT_S), ck),
        ("switch uplink leaf0-spine0 down (ECMP)", dict(n=3, rph=1, ft="ulfm",
                                                        strike=link(e, "down", "leaf0", "spine0")),
         None),
        ("slow link h2-leaf1 1 Gb/s -> 2 Mb/s", dict(n=3, rph=1, ft="ulfm",
                                                    strike=link(e, "rate", "h2", "leaf1", "0.002")),
         None),
        ("hung rank on another host", dict(n=3, rph=1, ft="ulfm", extra=[
            "--inject", "hang:rank=2:step=6"]), ck),
    ]


def one(e: Emulated, k: int, i: int, kw: dict, ck: Callable[[Path], list[str]] | None
        ) -> dict[str, float]:
    name = f"m{k}-{i}"
    extra = list(kw.pop("extra", []))
    if ck is not None:
        extra += ck(e.tmp / name)
    job: Job = e.job(name, kw.pop("n"), kw.pop("rph"), kw.pop("ft"), extra, **kw)
    recs = job.run.events("recovery")
    out = {"recovery_ms": 1e3 * sum(r["recovery_s"] for r in recs),
           "waited_s": max([r.get("waited_s", 0.0) for r in recs] or [0.0]),
           "hiccup_ms": 1e3 * job.hiccup_s(), "after_strike_s": job.after_strike_s,
           "survivors": float(job.run.events("ft_done")[-1]["world_size"])
           if job.run.events("ft_done") else 0.0, "resumed_wall_s": 0.0}
    if ck is not None and not job.run.events("done"):
        from tests.faults.netfaults import train_job

        again = train_job(e.prefix, job.run.workdir, name, 2, 1, "ulfm",
                          ["--checkpoint-dir", str(e.tmp / name / "ckpt"),
                           "--checkpoint-every", CKPT_EVERY, "--resume"], attempt=1)
        out["resumed_wall_s"] = again.wall_s
        out["survivors"] = float(again.run.events("ft_done")[-1]["world_size"])
    e.restore()
    return out


def main(repeats: int) -> None:
    if SKIP:
        sys.exit(f"measure_network: {SKIP}")
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        os.environ["DISTNET_EMULATE_DIR"] = str(tmp / "state")
        e = Emulated(unique_prefix("m"), tmp)
        try:
            cli(e.prefix, "up", "--topology", SPEC, "--link-gbps", "1")
            ref = [e.job(f"ref{i}", 3, 1, "ulfm") for i in range(repeats)]
            med = statistics.median(statistics.median(j.step_times()) for j in ref)
            print(f"fault-free, 3 ranks on 3 hosts: median step {1e3 * med:.1f} ms\n")
            print("| scenario | survivors | recovery (ms) | waited before declaring (s) | "
                  "step-time hiccup (ms) | strike to exit (s) | resumed job wall (s) |")
            print("|---|---|---|---|---|---|---|")
            for k, (label, kw, ck) in enumerate(scenarios(e)):
                rows = [one(e, k, i, dict(kw), ck) for i in range(repeats)]
                m = {key: statistics.median(r[key] for r in rows) for key in rows[0]}
                print(f"| {label} | {m['survivors']:g} | {m['recovery_ms']:.1f} | "
                      f"{m['waited_s']:.2f} | {m['hiccup_ms']:.0f} | {m['after_strike_s']:.1f} | "
                      f"{m['resumed_wall_s']:.1f} |", flush=True)
        finally:
            cli(e.prefix, "down")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)

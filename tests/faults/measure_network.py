"""Recovery time and step-time hiccup of the network-fault scenarios on the emulated cluster,
for docs/faults.md: `python -m tests.faults.measure_network [REPEATS] [SCENARIO...]` (root,
namespaces; SCENARIO numbers pick rows, so a long matrix can be split into short runs).

Same jobs and strikes as tests/faults/test_network_faults.py. Per scenario, medians over the
repeats of: the in-run recovery (revoke + shrink, from the recovery records) and the time waited
before the fault was declared; the stall (the longest wall-clock gap between two committed
steps after the strike minus the median gap before it: deadline, probe, fencing and recovery
together); the step-time hiccup (the longest step after the strike minus the median step before
it, from the --profile step records of the committed steps); the time from the strike to the
job's exit. Also how the fault was found and who named the network straggler.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
from pathlib import Path

from tests.emulate.conftest import SKIP, unique_prefix
from tests.faults.netfaults import SPEC, Job, cli, kill_host
from tests.faults.test_network_faults import (
    DEADLINE,
    SLOW_LINK_GBPS,
    SLOW_LINK_MODEL,
    Emulated,
    link,
)

Scenario = tuple[str, dict, list[str]]


def scenarios(e: Emulated) -> list[Scenario]:
    return [
        ("node crash (2 ranks/host, 6 -> 4)",
         dict(n=6, rph=2, strike=lambda: kill_host(e.hosts[2])), []),
        ("partition: h2's only cable down (3 -> 2)",
         dict(n=3, rph=1, strike=link(e, "down", "h2", "leaf1")), DEADLINE),
        ("switch uplink leaf0-spine0 down (ECMP)",
         dict(n=3, rph=1, strike=link(e, "down", "leaf0", "spine0")), []),
        ("slow link h2-leaf1 1 Gb/s -> 5 Mb/s (8x bigger model)",
         dict(n=3, rph=1, strike=link(e, "rate", "h2", "leaf1", SLOW_LINK_GBPS)),
         list(SLOW_LINK_MODEL)),
        ("hung rank on another host (3 -> 2)",
         dict(n=3, rph=1, fault_step=6), [*DEADLINE, "--inject", "hang:rank=2:step=6"]),
        ("rank frozen inside the reduction, another host (3 -> 2)",
         dict(n=3, rph=1, fault_step=6),
         [*DEADLINE, "--inject", "hang:rank=2:step=6:at=allreduce"]),
    ]


def found_by(job: Job) -> str:
    said = " ".join(job.run.output.split())
    if "did not answer the probe" in said:
        return "probe"
    if "never arrived" in said:
        return "arrival notes"
    return "runtime" if job.run.events("recovery") else "-"


def one(e: Emulated, name: str, kw: dict, extra: list[str]) -> dict[str, object]:
    kw = dict(kw)
    job = e.job(name, kw.pop("n"), kw.pop("rph"), "ulfm", extra, **kw)
    recs = job.run.events("recovery")
    ft = job.run.events("ft_done")
    blame = job.run.events("straggler")
    network = blame[-1].get("network", {}) if blame else {}
    out: dict[str, object] = {
        "recovery_ms": 1e3 * sum(r["recovery_s"] for r in recs),
        "waited_s": max([r.get("waited_s", 0.0) for r in recs] or [0.0]),
        "stall_s": job.stall_s(), "hiccup_ms": 1e3 * job.hiccup_s(),
        "after_strike_s": job.after_strike_s,
        "survivors": ft[-1]["world_size"] if ft else 0, "found": found_by(job),
        "network": ",".join(map(str, network.get("slow_ranks", []))) or "-",
        "ok": bool(job.run.events("done")) and bool(ft) and ft[-1]["params_identical"]}
    e.restore()
    return out


def median_row(rows: list[dict[str, object]]) -> dict[str, object]:
    m: dict[str, object] = {}
    for key, first in rows[0].items():
        vals = [r[key] for r in rows]
        if isinstance(first, bool):
            m[key] = f"{sum(map(bool, vals))}/{len(vals)}"
        elif isinstance(first, int | float):
            m[key] = statistics.median(float(v) for v in vals)  # type: ignore[arg-type]
        else:
            m[key] = "/".join(sorted(set(map(str, vals))))
    return m


def main(repeats: int, pick: list[int]) -> None:
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
            print(f"fault-free, 3 ranks on 3 hosts: median step {1e3 * med:.1f} ms "
                  f"(0.1 s of pacing per step before it)\n")
            print("| scenario | finished ok | survivors | found by | recovery (ms) | waited "
                  "before declaring (s) | stall (s) | step-time hiccup (ms) | network "
                  "straggler named | strike to exit (s) |")
            print("|---|---|---|---|---|---|---|---|---|---|")
            for k, (label, kw, extra) in enumerate(scenarios(e)):
                if pick and k not in pick:
                    continue
                m = median_row([one(e, f"m{k}-{i}", kw, extra) for i in range(repeats)])
                print(f"| {label} | {m['ok']} | {m['survivors']:g} | {m['found']} | "
                      f"{m['recovery_ms']:.1f} | {m['waited_s']:.2f} | {m['stall_s']:.2f} | "
                      f"{m['hiccup_ms']:.0f} | {m['network']} | {m['after_strike_s']:.1f} |",
                      flush=True)
        finally:
            cli(e.prefix, "down")


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]]
    main(args[0] if args else 3, args[1:])

"""Speed benchmark of the simulator: ring all-reduce on big fat-trees with ECMP.

Targets: k=32 (8,192 hosts, 16,382 steps) under 5 s, k=48 (27,648 hosts, 55,294 steps) under
30 s of wall time, network build, routing and schedule included. The fast engine solves the ring
step once (every step has the same pattern key when the buffer divides evenly), then the run is
one vectorised max-plus update per step. The ratio is wall / target; the CPU column is what the
run costs on an idle core (wall time grows with whatever else shares the machine).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from distnet.allreduce import get_schedule
from topology.builders import fat_tree
from topology.sim import simulate

TARGETS_S = {32: 5.0, 48: 30.0}
BUFFER_BYTES = 256 * 2**20


@dataclass(frozen=True)
class BenchRow:
    k: int
    hosts: int
    steps: int
    buffer_bytes: int
    sim_time_s: float  # simulated all-reduce time
    busbw_gbps: float
    wall_s: float  # what it cost to simulate
    cpu_s: float  # this process's CPU time: the wall time on an otherwise idle core
    target_s: float | None
    patterns_solved: int

    @property
    def ratio(self) -> float | None:
        return None if self.target_s is None else self.wall_s / self.target_s


def bench_ring(k: int, routing: str = "ecmp", seed: int = 0, itemsize: int = 4) -> BenchRow:
    """Simulate ring all-reduce of ~256 MiB over every host of a k-ary fat-tree, packed."""
    t0, c0 = time.perf_counter(), time.process_time()
    net = fat_tree(k)
    p = net.n_hosts
    n = max(p, (BUFFER_BYTES // itemsize) // p * p)  # a multiple of p: one pattern for all steps
    sched = get_schedule("ring")(p, n)
    res = simulate(net, sched, np.arange(p), routing=routing, seed=seed, itemsize=itemsize,
                   engine="fast")
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return BenchRow(k, p, sched.nsteps, n * itemsize, res.time_s, res.busbw_gbps, wall, cpu,
                    TARGETS_S.get(k), res.patterns_solved)


def bench_table(rows: list[BenchRow]) -> str:
    head = (f"{'k':>3} {'hosts':>7} {'steps':>7} {'buffer':>9} {'sim time':>10} "
            f"{'busbw':>10} {'wall':>8} {'cpu':>8} {'target':>7} {'ratio':>6}")
    lines = [head]
    for r in rows:
        target = f"{r.target_s:.0f} s" if r.target_s is not None else "-"
        ratio = f"{r.ratio:.2f}" if r.ratio is not None else "-"
        lines.append(
            f"{r.k:>3} {r.hosts:>7} {r.steps:>7} {r.buffer_bytes / 2**20:>5.0f} MiB "
            f"{r.sim_time_s * 1e3:>7.2f} ms {r.busbw_gbps:>5.1f} Gb/s {r.wall_s:>6.2f} s "
            f"{r.cpu_s:>6.2f} s "
            f"{target:>7} {ratio:>6}"
        )
    return "\n".join(lines)

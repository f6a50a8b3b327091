"""Speed benchmark of the simulator (`python -m topology bench`): the targets of the exact engine.

Every row is one all-reduce of 64 MiB float32 with random placement and ECMP on a fat-tree just
big enough for the hosts (k=8: 128, k=16: 1,024, k=32: 8,192), simulated by `auto` (which goes
exact here: random placement never lets it prove the fast engine exact), network build, routing
and schedule included. Targets: ring 1,024 hosts < 5 s, ring 8,192 hosts < 60 s; tree,
Rabenseifner, recursive doubling, hierarchical on 8,192 hosts < 60 s each; wall time about linear
in the number of transfers (the µs/transfer column of the ring rows). The last rows are the fast
engine's scale (packed rings on k=32 and k=48, which auto proves exact). Wall time grows with
whatever else shares the machine; the CPU column is what the run costs on an idle core.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from topology.builders import fat_tree
from topology.sim import simulate_allreduce

MIB = 2**20
# (algorithm, hosts, fat-tree radix, placement, buffer bytes, target seconds)
Case = tuple[str, int, int, str, int, float | None]
CASES: list[Case] = [
    ("ring", 128, 8, "random", 64 * MIB, None),
    ("ring", 256, 16, "random", 64 * MIB, None),
    ("ring", 512, 16, "random", 64 * MIB, None),
    ("ring", 1024, 16, "random", 64 * MIB, 5.0),
    ("ring", 2048, 32, "random", 64 * MIB, None),
    ("ring", 4096, 32, "random", 64 * MIB, None),
    ("ring", 8192, 32, "random", 64 * MIB, 60.0),
    ("tree", 8192, 32, "random", 64 * MIB, 60.0),
    ("rabenseifner", 8192, 32, "random", 64 * MIB, 60.0),
    ("recursive_doubling", 8192, 32, "random", 64 * MIB, 60.0),
    ("hierarchical", 8192, 32, "random", 64 * MIB, 60.0),
    ("ring", 8192, 32, "packed", 256 * MIB, None),
    ("ring", 27648, 48, "packed", 256 * MIB, None),
]


@dataclass(frozen=True)
class BenchRow:
    algorithm: str
    hosts: int
    k: int
    placement: str
    buffer_bytes: int
    engine: str
    transfers: int
    sim_time_s: float  # simulated all-reduce time
    wall_s: float  # what it cost to simulate
    cpu_s: float  # this process's CPU time: the wall time on an otherwise idle core
    target_s: float | None

    @property
    def ratio(self) -> float | None:
        return None if self.target_s is None else self.wall_s / self.target_s


def bench_case(algorithm: str, hosts: int, k: int, placement: str, nbytes: int,
               target_s: float | None, engine: str = "auto", seed: int = 1) -> BenchRow:
    t0, c0 = time.perf_counter(), time.process_time()
    net = fat_tree(k)
    run = simulate_allreduce(net, algorithm, hosts, nbytes, placement=placement, seed=seed,
                             engine=engine)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    transfers = sum(len(run.schedule.step(s)) for s in range(run.schedule.nsteps)) \
        if run.schedule.p * run.schedule.nsteps <= 50_000_000 else \
        run.schedule.p * run.schedule.nsteps
    return BenchRow(algorithm, hosts, k, placement, run.nbytes, run.result.engine, transfers,
                    run.result.time_s, wall, cpu, target_s)


HEAD = (f"{'algorithm':<18} {'hosts':>6} {'k':>3} {'place':<7} {'buffer':>8} {'engine':<6} "
        f"{'transfers':>12} {'sim time':>11} {'wall':>8} {'cpu':>8} {'us/xfer':>8} "
        f"{'target':>7} {'ratio':>6}")


def bench_line(r: BenchRow) -> str:
    target = f"{r.target_s:.0f} s" if r.target_s is not None else "-"
    ratio = f"{r.ratio:.2f}" if r.ratio is not None else "-"
    per = r.wall_s / max(1, r.transfers) * 1e6
    return (f"{r.algorithm:<18} {r.hosts:>6} {r.k:>3} {r.placement:<7} "
            f"{r.buffer_bytes / MIB:>4.0f} MiB {r.engine:<6} {r.transfers:>12,} "
            f"{r.sim_time_s * 1e3:>8.2f} ms {r.wall_s:>6.2f} s {r.cpu_s:>6.2f} s {per:>8.2f} "
            f"{target:>7} {ratio:>6}")


def bench_table(rows: list[BenchRow]) -> str:
    return "\n".join([HEAD, *(bench_line(r) for r in rows)])

"""`python -m distnet.bench emulated ...`: the timings `topology emulate validate` compares the
simulator with, plus what only a rank can see: its TCP connections (5-tuples from `ss`).

Run under `python -m topology emulate run`. Each (algorithm, size) is timed as the median of
`--iters` barrier-separated runs (the slowest rank's time each), after one warm-up; `--probe`
instead ping-pongs `--sizes` between rank pairs (0, 1), (2, 3)... (the calibration). Writes one
JSON file from rank 0: {"results": [...], "connections": [[src, sport, dst, dport,
bytes_sent], ...]}.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import time
from typing import Any

import numpy as np

from distnet.common.errors import UserError
from distnet.common.units import parse_size

DATA_PREFIX = "198.18."  # the emulated data network (topology/emulate/plan.py)


def parse_ss(text: str) -> list[list[Any]]:
    """[src, sport, dst, dport, bytes_sent] of every data-network connection in `ss -tniH`
    output (a socket line, then an indented line of tcp_info; bytes_sent -1 when missing)."""
    conns: list[list[Any]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        if not line[0].isspace():
            parts = line.split()
            if len(parts) < 4 or ":" not in parts[-1] or ":" not in parts[-2]:
                continue
            (src, sport), (dst, dport) = (p.rsplit(":", 1) for p in parts[-2:])
            if src.startswith(DATA_PREFIX) and dst.startswith(DATA_PREFIX):
                conns.append([src, int(sport), dst, int(dport), -1])
            continue
        m = re.search(r"\bbytes_sent:(\d+)", line)
        if m and conns and conns[-1][4] < 0:
            conns[-1][4] = int(m.group(1))
    return conns


def connections() -> list[list[Any]]:
    """Established TCP connections of this namespace on the data network (both ends local),
    with the bytes each has sent: of several connections between two hosts (2 ranks per host)
    the busiest is the one whose path the traffic took."""
    out = subprocess.run(["ss", "-tniH", "state", "established"], capture_output=True,
                         text=True, timeout=30).stdout
    return parse_ss(out)


def _time(comm: Any, fn: Any, buf: np.ndarray, iters: int) -> list[float]:
    from mpi4py import MPI

    times = []
    for _ in range(iters + 1):
        buf[:] = 1.0
        comm.Barrier()
        t0 = time.perf_counter()
        fn(comm, buf)
        dt = comm.allreduce(time.perf_counter() - t0, op=MPI.MAX)
        times.append(dt)
    return times[1:]  # the first is a warm-up (connections, slow start)


def _probe(comm: Any, sizes: list[int], iters: int) -> list[dict[str, Any]]:
    """One-way time of `size` bytes, half a ping-pong, in pairs (0, 1), (2, 3), ... all at once:
    with every rank busy the probe pays the same share of the 2 cores as the collectives do."""
    from mpi4py import MPI

    out = []
    peer = comm.rank ^ 1
    for size in sizes:
        buf = np.zeros(max(1, size // 4), dtype=np.float32)
        times = []
        for _ in range(iters + 1):
            comm.Barrier()
            t0 = time.perf_counter()
            if peer < comm.size and comm.rank % 2 == 0:
                comm.Send(buf, dest=peer)
                comm.Recv(buf, source=peer)
            elif peer < comm.size:
                comm.Recv(buf, source=peer)
                comm.Send(buf, dest=peer)
            times.append(comm.allreduce(time.perf_counter() - t0, op=MPI.MAX) / 2)
        out.append({"algorithm": "p2p", "bytes": buf.nbytes,
                    "median_s": float(np.median(times[1:])), "times_s": times[1:]})
    return out


def main(argv: list[str]) -> int:
    from mpi4py import MPI

    from distnet.allreduce import ALGORITHMS

    ap = argparse.ArgumentParser(prog="distnet.bench emulated")
    ap.add_argument("--algorithms", default="ring")
    ap.add_argument("--sizes", default="1MiB")
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--probe", action="store_true")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    comm = MPI.COMM_WORLD
    try:
        sizes = [parse_size(s) for s in a.sizes.split(",")]
        if not 1 <= a.iters <= 1000 or any(not 4 <= s <= 1 << 30 for s in sizes):
            raise UserError("--iters must be 1..1000 and sizes 4 B..1 GiB")
        names = a.algorithms.split(",")
        unknown = [n for n in names if n not in ALGORITHMS]
        if unknown:
            raise UserError(f"unknown algorithm(s) {unknown} (known: {sorted(ALGORITHMS)})")
    except UserError as exc:
        if comm.rank == 0:
            print(f"distnet.bench emulated: error: {exc}", flush=True)
        return 2
    results: list[dict[str, Any]] = []
    if a.probe:
        results = _probe(comm, sizes, a.iters)
    else:
        for name in names:
            for size in sizes:
                buf = np.ones(size // 4, dtype=np.float32)
                times = _time(comm, ALGORITHMS[name], buf, a.iters)
                results.append({"algorithm": name, "bytes": buf.nbytes, "ranks": comm.size,
                                "median_s": float(np.median(times)), "times_s": times})
    conns = comm.gather(connections())
    if comm.rank == 0:
        seen = sorted({tuple(c) for part in conns or [] for c in part})
        with open(a.out, "w", encoding="utf-8") as fh:
            json.dump({"results": results, "connections": [list(c) for c in seen]}, fh)
    comm.Barrier()
    return 0

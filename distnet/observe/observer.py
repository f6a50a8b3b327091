"""What a run watches, in one object the trainer and the benches hold: the trace, the arrival
log for straggler blame and the stall notes. Built and finished collectively; in between every
call is local and cheap, and a piece that is switched off costs one `if`.

Hook points, in the order a step meets them:
    begin_step(step)                  the step starts (events now belong to it)
    span(name, cat)                   a phase: forward, backward, optimiser, checkpoint, recovery
    record_layer(phase, i, name, t0, t1)   per layer, from Sequential (trace only)
    reduce_start(bucket)              a bucket's all-reduce starts (the first one is the arrival)
    reduce_done(bucket, steps)        ... and is done; steps = schedule step times (--trace-detail)
    reduced(seconds)                  the step's whole reduction took this long (network watch)
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from typing import Any

from distnet.observe import linkcheck
from distnet.observe.clock import Clock, ClockMap, Offset, estimate_offsets
from distnet.observe.stall import StallReporter
from distnet.observe.straggler import ArrivalLog, Blame, blame
from distnet.observe.trace import (
    DEFAULT_STEPS,
    Tracer,
    bucket_lane,
    chrome_trace,
    wall_time_label,
    write_trace,
)


class Observer:
    def __init__(self, comm: Any, world_rank: int | None = None, *, trace_path: str | None = None,
                 trace_plot: str | None = None, trace_detail: bool = False,
                 trace_steps: int = DEFAULT_STEPS, stall_warn_s: float = 0.0,
                 straggler: bool = True, clock: Clock | None = None,
                 log: Callable[[str], None] | None = None, meta: dict[str, Any] | None = None
                 ) -> None:
        self.comm = comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.world_rank = self.rank if world_rank is None else world_rank
        self.clock = clock or Clock()
        self.trace_path, self.trace_plot = trace_path, trace_plot
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.meta = dict(meta or {})
        self.tracer = (Tracer(self.world_rank, self.clock, trace_steps, trace_detail)
                       if trace_path or trace_plot else None)
        self.detail = bool(self.tracer and trace_detail)
        self.arrivals = ArrivalLog() if straggler and self.size > 1 else None
        self.reductions = linkcheck.ReduceLog() if self.arrivals is not None else None
        self.stall = (StallReporter(comm, self.world_rank, stall_warn_s)
                      if stall_warn_s > 0 and self.size > 1 else None)
        self._start_offset: Offset = (estimate_offsets(comm, self.clock)[self.rank]
                                      if self.tracer or self.arrivals else Offset(0, 0, 0))
        self.step = -1
        self._arrived = False
        self._reduce_t0: dict[int, float] = {}
        self.blame: Blame | None = None

    @property
    def traces_layers(self) -> bool:
        return self.tracer is not None

    # ---- per step ---------------------------------------------------------------------------
    def begin_step(self, step: int) -> None:
        self.step = step
        self._arrived = False
        if self.tracer is not None:
            self.tracer.begin_step(step)

    def span(self, name: str, cat: str, args: dict[str, Any] | None = None,
             keep: bool = False) -> Any:
        if self.tracer is None:
            return contextlib.nullcontext()
        return self.tracer.span(name, cat, args=args, keep=keep)

    def instant(self, name: str, cat: str, args: dict[str, Any] | None = None) -> None:
        if self.tracer is not None:
            self.tracer.instant(name, cat, self.clock.now(), args=args, keep=True)

    def record_layer(self, phase: str, index: int, name: str, t0: float, t1: float) -> None:
        """Per-layer forward/backward, times from time.perf_counter (Sequential's clock)."""
        if self.tracer is not None:
            skew = self.clock.skew_s
            self.tracer.complete(f"{name} {index}", phase, t0 + skew, t1 + skew)

    def reduce_start(self, bucket: int) -> None:
        t = self.clock.now()
        if not self._arrived:
            self._arrived = True
            if self.arrivals is not None:
                self.arrivals.arrive(self.step, t)
            if self.tracer is not None:
                self.tracer.instant("arrive", "straggler", t, args={"step": self.step})
        if self.stall is not None:
            self.stall.arrive(self.step, bucket)
        if self.tracer is not None:
            self._reduce_t0[bucket] = t

    def reduced(self, seconds: float) -> None:
        if self.reductions is not None:
            self.reductions.add(seconds)

    def reduce_done(self, bucket: int, algorithm: str = "",
                    steps: list[tuple[int, float, float]] | None = None) -> None:
        tr = self.tracer
        if tr is None:
            return
        t1 = self.clock.now()
        t0 = self._reduce_t0.pop(bucket, t1)
        lane = bucket_lane(bucket)
        if lane not in tr.lane_names:
            tr.name_lane(lane, f"bucket {bucket}")
        args = {"step": self.step, "bucket": bucket, "algorithm": algorithm}
        tr.complete(f"allreduce b{bucket}", "allreduce", t0, t1, lane, args)
        skew = self.clock.skew_s
        for i, s0, s1 in steps or ():
            # A step's completion is seen when it is tested: clamp into the bucket's span.
            a, b = max(t0, s0 + skew), min(t1, s1 + skew)
            tr.complete(f"sched step {i}", "schedule", a, max(a, b), lane)

    # ---- end of run -------------------------------------------------------------------------
    def finish(self, comm: Any = None) -> dict[str, Any] | None:
        """Collective over `comm` (default: the one it was built on; after a shrink, the
        survivors'): close the stall notes, gather arrivals and trace to rank 0, judge, write.

        Returns the straggler record on rank 0 (None elsewhere, or with straggler tracking off).
        """
        comm = self.comm if comm is None else comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        if self.stall is not None:
            self.stall.close()
            self.stall = None
        if not (self.tracer or self.arrivals):
            return None
        end = estimate_offsets(comm, self.clock)
        offsets = comm.gather((self.world_rank, self._start_offset, end[self.rank]), root=0)
        cmap = ClockMap(self._start_offset, end[self.rank])
        record = None
        if self.arrivals is not None:
            logs = comm.gather(self.arrivals.payload(self.world_rank, cmap), root=0)
            if self.rank == 0:
                self.blame = blame(logs)
                record = self.blame.record()
            network = self._network_stragglers(comm)
            if record is not None and network is not None:
                record["network"] = network
        if self.tracer is not None:
            payloads = comm.gather(self.tracer.payload(cmap), root=0)
            if self.rank == 0:
                meta = {**self.meta, "world_size": self.size, "written": wall_time_label(),
                        "straggler": record["line"] if record else None}
                trace = chrome_trace(payloads, {r: (a, b) for r, a, b in offsets}, meta)
                if self.trace_path:
                    write_trace(self.trace_path, trace)
                if self.trace_plot:
                    from distnet.observe.timeline_plot import plot_timeline

                    plot_timeline(trace, self.trace_plot)
        return record

    def _network_stragglers(self, comm: Any) -> dict[str, Any] | None:
        """Collective: if any rank's reductions slowed down, measure every link (linkcheck)."""
        from mpi4py import MPI

        slow = self.reductions is not None and self.reductions.slowed_down()
        if not comm.allreduce(int(slow), op=MPI.MAX):
            return None
        times = linkcheck.measure(comm)
        gathered = comm.gather((self.world_rank, times), root=0)
        if gathered is None:
            return None
        name = [w for w, _ in gathered]  # comm rank -> world rank
        measured = {w: {name[peer]: t for peer, t in mine.items()} for w, mine in gathered}
        return linkcheck.judge(measured).record()

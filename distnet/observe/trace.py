"""A per-rank timeline written as Chrome trace-event JSON (Perfetto and chrome://tracing open it).

Each rank records complete events ("X": start and duration) into lanes of its own track: lane 0
holds the step and its phases (forward and backward per layer, optimiser, checkpoint writes),
lane 1 + k holds bucket k's all-reduce from start to finish (with `detail`, its schedule steps
nested inside). A lane is a trace "thread", a rank a trace "process", so the viewer draws one
track per rank with one row per lane, and spans on one row nest.

Memory stays bounded on long runs: events are kept per step in a ring buffer of the last
`max_steps` steps; events outside steps (set-up, recoveries) go to a bounded list of their own.
At the end `merge` gathers every rank's events to rank 0, maps them onto rank 0's clock
(distnet/observe/clock.py) and writes one file whose metadata carries each rank's clock offset
and its error bound.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from distnet.common.errors import UserError
from distnet.observe.clock import Clock, ClockMap, Offset

# (phase, name, category, lane, start_s, duration_s, args) in the rank's own clock.
Event = tuple[str, str, str, int, float, float, dict[str, Any] | None]
MAX_OTHER_EVENTS = 2000
DEFAULT_STEPS = 100
COMPUTE_LANE = 0


def bucket_lane(bucket: int) -> int:
    return 1 + bucket


class Tracer:
    """Records this rank's events; cheap enough to leave on (a tuple append per event)."""

    def __init__(self, world_rank: int, clock: Clock | None = None,
                 max_steps: int = DEFAULT_STEPS, detail: bool = False) -> None:
        if max_steps < 1:
            raise UserError(f"--trace-steps must be >= 1, got {max_steps}")
        self.world_rank = world_rank
        self.clock = clock or Clock()
        self.detail = detail
        self.steps: deque[tuple[int, list[Event]]] = deque(maxlen=max_steps)
        self.steps_seen = 0
        self.other: deque[Event] = deque(maxlen=MAX_OTHER_EVENTS)
        self._current: list[Event] | None = None
        self.lane_names: dict[int, str] = {COMPUTE_LANE: "compute"}

    def begin_step(self, step: int) -> None:
        """Events from now on belong to `step` (a redone step simply records again)."""
        self._current = []
        self.steps.append((step, self._current))
        self.steps_seen += 1

    def _sink(self, keep: bool) -> Any:
        return self.other if keep or self._current is None else self._current

    def complete(self, name: str, cat: str, t0: float, t1: float, lane: int = COMPUTE_LANE,
                 args: dict[str, Any] | None = None, keep: bool = False) -> None:
        """A span [t0, t1] (seconds of `clock`); keep=True survives the ring buffer."""
        self._sink(keep).append(("X", name, cat, lane, t0, t1 - t0, args))

    def instant(self, name: str, cat: str, t: float, lane: int = COMPUTE_LANE,
                args: dict[str, Any] | None = None, keep: bool = False) -> None:
        self._sink(keep).append(("i", name, cat, lane, t, 0.0, args))

    @contextmanager
    def span(self, name: str, cat: str, lane: int = COMPUTE_LANE,
             args: dict[str, Any] | None = None, keep: bool = False) -> Iterator[None]:
        t0 = self.clock.now()
        try:
            yield
        finally:
            self.complete(name, cat, t0, self.clock.now(), lane, args, keep)

    def name_lane(self, lane: int, name: str) -> None:
        self.lane_names[lane] = name

    def events(self) -> list[Event]:
        out = list(self.other)
        for _, evs in self.steps:
            out += evs
        return out

    def payload(self, cmap: ClockMap) -> dict[str, Any]:
        """What this rank sends to rank 0: its events already on rank 0's clock (µs)."""
        # Both ends go through the map: with a drift estimate its slope is not exactly 1, and
        # a duration kept as measured would let a child end past its parent on rank 0's clock.
        evs = [(ph, name, cat, lane, cmap.to_rank0(t0) * 1e6,
                (cmap.to_rank0(t0 + dur) - cmap.to_rank0(t0)) * 1e6, args)
               for ph, name, cat, lane, t0, dur, args in self.events()]
        return {"rank": self.world_rank, "events": evs, "lanes": dict(self.lane_names),
                "steps_kept": len(self.steps), "steps_seen": self.steps_seen}


def chrome_trace(payloads: list[dict[str, Any]], offsets: dict[int, tuple[Offset, Offset]],
                 meta: dict[str, Any]) -> dict[str, Any]:
    """Build the trace-event JSON object from every rank's payload (rank 0 only)."""
    t_min = min((e[4] for p in payloads for e in p["events"]), default=0.0)
    events: list[dict[str, Any]] = []
    for p in sorted(payloads, key=lambda p: p["rank"]):
        r = p["rank"]
        events.append({"ph": "M", "name": "process_name", "pid": r, "tid": 0,
                       "args": {"name": f"rank {r}"}})
        events.append({"ph": "M", "name": "process_sort_index", "pid": r, "tid": 0,
                       "args": {"sort_index": r}})
        for lane, lname in sorted(p["lanes"].items()):
            events.append({"ph": "M", "name": "thread_name", "pid": r, "tid": lane,
                           "args": {"name": lname}})
            events.append({"ph": "M", "name": "thread_sort_index", "pid": r, "tid": lane,
                           "args": {"sort_index": lane}})
        # Longer spans first at equal start, so viewers (and nesting checks) see parents first.
        for ph, name, cat, lane, ts, dur, args in sorted(p["events"],
                                                        key=lambda e: (e[3], e[4], -e[5])):
            ev: dict[str, Any] = {"ph": ph, "name": name, "cat": cat, "pid": r, "tid": lane,
                                  "ts": round(ts - t_min, 3)}
            if ph == "X":
                ev["dur"] = round(dur, 3)
            else:
                ev["s"] = "t"
            if args:
                ev["args"] = args
            events.append(ev)
    clocks = {str(r): {"offset_us_start": round(a.offset_s * 1e6, 3),
                       "offset_us_end": round(b.offset_s * 1e6, 3),
                       "error_us": round(max(a.error_s, b.error_s) * 1e6, 3)}
              for r, (a, b) in sorted(offsets.items())}
    other = {**meta, "clock": "rank 0's monotonic clock; ts in us from the first event",
             "clock_offsets": clocks,
             "steps_kept": {str(p["rank"]): p["steps_kept"] for p in payloads},
             "steps_seen": {str(p["rank"]): p["steps_seen"] for p in payloads}}
    return {"traceEvents": events, "displayTimeUnit": "ms", "otherData": other}


def write_trace(path: str, trace: dict[str, Any]) -> None:
    try:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(trace, f, separators=(",", ":"))
            f.write("\n")
    except OSError as e:
        raise UserError(f"cannot write --trace {path}: {e.strerror}") from None


def load_trace(path: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        return dict(json.load(f))


def wall_time_label() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

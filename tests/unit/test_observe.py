"""distnet/observe without MPI: straggler judgement, stall table, trace format, clock map."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from distnet.common.errors import UserError
from distnet.observe.clock import ClockMap, Offset
from distnet.observe.stall import StallTable
from distnet.observe.straggler import ArrivalLog, blame
from distnet.observe.trace import Tracer, chrome_trace, load_trace, write_trace


def logs(arrivals: np.ndarray, ranks: list[int] | None = None) -> list[dict]:
    """arrivals: (steps, ranks) seconds -> the gathered payloads blame() takes."""
    ranks = ranks or list(range(arrivals.shape[1]))
    return [{"rank": r, "steps": list(range(arrivals.shape[0])),
             "times": [float(t) for t in arrivals[:, i]]} for i, r in enumerate(ranks)]


def test_straggler_blamed_with_share_and_median_lead() -> None:
    rng = np.random.default_rng(1)
    steps = 40
    base = np.arange(steps)[:, None] * 0.010 + rng.uniform(0, 2e-4, (steps, 4))
    base[:, 3] += 0.004  # world rank 3 is 4 ms late in every step
    base[::8, 3] -= 0.005  # ... except in one step of 8, where it is early
    b = blame(logs(base))
    assert b.straggler == 3
    assert b.last_count[3] == 35
    assert b.line().startswith("straggler: world rank 3 arrived last in 88 % of steps, median +")
    assert 3.7e-3 < b.median_lead_s[3] < 4.1e-3
    assert b.median_wait_s[3] == 0.0 and b.median_wait_s[0] > 3e-3
    rec = b.record()
    assert rec["event"] == "straggler" and rec["straggler"] == 3 and json.dumps(rec)


def test_symmetric_noise_blames_nobody() -> None:
    rng = np.random.default_rng(2)
    arr = np.arange(200)[:, None] * 0.005 + rng.uniform(0, 3e-4, (200, 4))
    b = blame(logs(arr))
    assert b.straggler is None and b.line().startswith("straggler: none (4 ranks, 200 steps")


def test_always_last_but_by_noise_only_blames_nobody() -> None:
    arr = np.arange(50)[:, None] * 0.010 + np.array([0, 1e-5, 2e-5, 5e-5])
    b = blame(logs(arr))
    assert b.last_count[3] == 50 and b.straggler is None  # 50 µs lead < 2 ms


def test_world_ranks_and_missing_steps() -> None:
    arr = np.arange(20)[:, None] * 0.01 + np.array([0.0, 0.0, 0.005])
    payloads = logs(arr, ranks=[0, 2, 5])
    first = payloads[0]
    first["steps"], first["times"] = first["steps"][:10], first["times"][:10]
    b = blame(payloads)
    assert b.straggler == 5 and b.ranks == [0, 2, 5] and b.steps == 20
    assert blame([{"rank": 0, "steps": [0, 1], "times": [0.0, 1.0]}]).straggler is None


def test_arrival_log_keeps_the_redone_step_once() -> None:
    log = ArrivalLog()
    for step, t in ((0, 1.0), (1, 2.0), (1, 2.5), (2, 3.0)):
        log.arrive(step, t)
    p = log.payload(0, ClockMap(Offset(10.0, 0.0, 0.0)))
    assert p["steps"] == [0, 1, 2] and p["times"] == [11.0, 12.5, 13.0]


def test_clock_map_interpolates_drift() -> None:
    cmap = ClockMap(Offset(1.0, 1e-6, 0.0), Offset(3.0, 2e-6, 100.0))
    assert cmap.to_rank0(0.0) == 1.0 and cmap.to_rank0(50.0) == 52.0
    assert cmap.to_rank0(100.0) == 103.0 and cmap.error_s == 2e-6


def test_stall_table_names_the_missing_rank_and_repeats() -> None:
    now = [0.0]
    t = StallTable([0, 1, 2, 3], warn_s=5.0, now=lambda: now[0])
    for r in range(4):
        t.note(r, (3, 1))
    assert t.check() is None
    for r in (0, 1, 3):
        t.note(r, (4, 0))
    now[0] = 4.0
    assert t.check() is None  # not yet warn_s
    now[0] = 5.5
    line = t.check()
    assert line is not None and "step 4 bucket 0" in line
    assert "world rank(s) 2 " in line and "last at step 3 bucket 1" in line
    now[0] = 7.0
    assert t.check() is None  # repeats only every warn_s
    now[0] = 10.6
    assert "has waited 11 s" in (t.check() or "")
    t.note(2, (4, 0))
    now[0] = 20.0
    assert t.check() is None  # everyone arrived: no stall


def test_stall_table_never_seen_rank() -> None:
    now = [0.0]
    t = StallTable([0, 1], warn_s=1.0, now=lambda: now[0])
    t.note(0, (0, 0))
    now[0] = 2.0
    assert "world rank 1 never seen" in (t.check() or "")


def nested_ok(events: list[dict]) -> bool:
    """Spans of one (pid, tid) nest: each either contains or is disjoint from the next."""
    lanes: dict[tuple[int, int], list[tuple[float, float]]] = {}
    for e in events:
        if e["ph"] == "X":
            lanes.setdefault((e["pid"], e["tid"]), []).append((e["ts"], e["ts"] + e["dur"]))
    for spans in lanes.values():
        stack: list[float] = []
        for a, b in sorted(spans, key=lambda s: (s[0], -s[1])):
            while stack and stack[-1] <= a + 1e-3:
                stack.pop()
            if stack and b > stack[-1] + 1e-3:
                return False
            stack.append(b)
    return True


def test_trace_json_has_tracks_metadata_and_nesting(tmp_path: Path) -> None:
    payloads = []
    for r in range(3):
        tr = Tracer(r, max_steps=2)
        for step in range(4):
            tr.begin_step(step)
            t = 10.0 * step + r
            tr.complete("step", "step", t, t + 5)
            tr.complete("Dense 0", "forward", t + 1, t + 2)
            tr.complete("allreduce b0", "allreduce", t + 3, t + 6, lane=1)
        tr.name_lane(1, "bucket 0")
        tr.instant("recovery", "recovery", 25.0, keep=True)
        payloads.append(tr.payload(ClockMap(Offset(-r, 1e-6, 0.0))))
    offs = {r: (Offset(-r, 1e-6, 0), Offset(-r, 2e-6, 1)) for r in range(3)}
    path = tmp_path / "t.json"
    write_trace(str(path), chrome_trace(payloads, offs, {"run": "unit"}))
    trace = load_trace(str(path))
    evs = trace["traceEvents"]
    assert {e["pid"] for e in evs} == {0, 1, 2}
    names = {(e["pid"], e["args"]["name"]) for e in evs if e["name"] == "process_name"}
    assert names == {(0, "rank 0"), (1, "rank 1"), (2, "rank 2")}
    steps = [e for e in evs if e.get("cat") == "step"]
    assert len(steps) == 6  # ring buffer: the last 2 of 4 steps per rank
    assert trace["otherData"]["steps_seen"] == {"0": 4, "1": 4, "2": 4}
    assert trace["otherData"]["clock_offsets"]["2"]["error_us"] == 2.0
    assert all(e["ts"] >= 0 for e in evs if "ts" in e)
    # rank r's events were shifted by -r s: all ranks' step 3 start together on rank 0's clock
    starts = {e["pid"]: e["ts"] for e in steps if e["ts"] > 5e6}
    assert len(set(starts.values())) == 1
    assert nested_ok(evs)
    assert sum(e["name"] == "recovery" for e in evs) == 3


def test_nesting_check_can_fail() -> None:
    bad = [{"ph": "X", "pid": 0, "tid": 0, "ts": 0, "dur": 10},
           {"ph": "X", "pid": 0, "tid": 0, "ts": 5, "dur": 10}]
    assert not nested_ok(bad)


def test_tracer_rejects_empty_ring() -> None:
    with pytest.raises(UserError):
        Tracer(0, max_steps=0)


def test_progress_silent_when_not_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    from distnet.common import progress

    b = progress.bar(10, "x")
    b.update(3)
    b.close()
    assert not progress.enabled(0) and not progress.enabled(1)
    assert capsys.readouterr().err == ""


def test_drifting_clock_map_keeps_children_inside_parents() -> None:
    # rank-0 time runs 1 % faster than this rank's: both ends of a span must go through the map
    tr = Tracer(0, max_steps=1)
    tr.begin_step(0)
    tr.complete("step", "step", 0.0, 1.0)
    tr.complete("Dense 0", "backward", 0.5, 1.0 - 1e-7)
    cmap = ClockMap(Offset(0.0, 1e-6, 0.0), Offset(0.01, 1e-6, 1.0))
    events = [{"ph": ph, "pid": 0, "tid": lane, "ts": ts, "dur": dur}
              for ph, _, _, lane, ts, dur, _ in tr.payload(cmap)["events"]]
    assert nested_ok(events)
    step, layer = sorted(events, key=lambda e: e["ts"])
    assert step["dur"] == pytest.approx(1.01e6)

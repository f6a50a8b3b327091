"""distnet/observe under MPI: clock offsets against a known skew, a bucketed run's trace."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest

from distnet.observe.clock import Clock, estimate_offsets

SKEW_S = 0.37


@pytest.mark.mpi(min_size=2)
def test_offsets_recover_an_injected_skew() -> None:
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    offsets = estimate_offsets(comm, Clock(skew_s=SKEW_S * comm.rank))
    assert offsets[0].offset_s == 0.0 and offsets[0].error_s == 0.0
    for r, off in enumerate(offsets):
        # Cristian's bound: the truth lies within ±error of the estimate, whatever the delays.
        assert abs(off.offset_s + SKEW_S * r) <= off.error_s + 1e-9, (r, off)
        assert off.error_s < 0.1


@pytest.mark.mpi(min_size=2)
def test_bucketed_run_traces_every_rank_with_nested_spans() -> None:
    from mpi4py import MPI

    from distnet.nn.model import build_mlp
    from distnet.observe.observer import Observer
    from distnet.observe.trace import load_trace
    from distnet.training.gradsync import GradSync
    from tests.unit.test_observe import nested_ok

    comm = MPI.COMM_WORLD
    tmp = comm.bcast(tempfile.mkdtemp(prefix="dntrace") if comm.rank == 0 else None)
    path = os.path.join(tmp, "trace.json")
    model = build_mlp(8, [512, 512], 4, seed=0)  # 1.07 MB: past the 1 MiB first bucket
    sync = GradSync(comm, model.grads, model.param_slices, "ring", bucket_mb=0.25)
    obs = Observer(comm, trace_path=path, trace_detail=True, stall_warn_s=60.0,
                   clock=Clock(skew_s=0.25 * comm.rank))
    model.recorder = obs
    sync.observe(obs)
    x = np.random.default_rng(comm.rank).standard_normal((5, 8)).astype(np.float32)
    for step in range(3):
        obs.begin_step(step)
        with obs.span("step", "step"):
            model.zero_grad()
            with obs.span("forward", "phase"):
                out = model.forward(x, train=True)
            with obs.span("backward", "phase"):
                model.backward(np.ones_like(out), hook=sync.hook)
            sync.finish()
    record = obs.finish()
    sync.close()
    if comm.rank != 0:
        assert record is None
        return
    assert record is not None and record["steps"] == 3
    trace = load_trace(path)
    evs = trace["traceEvents"]
    assert {e["pid"] for e in evs} == set(range(comm.size))
    assert nested_ok(evs)
    buckets = {e["tid"] for e in evs if e.get("cat") == "allreduce"}
    assert len(buckets) > 1
    assert any(e.get("cat") == "schedule" for e in evs)
    layers = {e["name"] for e in evs if e.get("cat") == "backward"}
    assert {"Dense 0", "Dense 4"} <= layers
    # Skewed clocks were mapped back: every rank's first step starts within 0.1 s of rank 0's.
    first = {}
    for e in evs:
        if e.get("cat") == "step":
            first.setdefault(e["pid"], e["ts"])
    assert max(first.values()) - min(first.values()) < 1e5
    assert set(trace["otherData"]["clock_offsets"]) == {str(r) for r in range(comm.size)}

"""In-process pieces of the fault machinery: plans, checksums, bit flips, the faulty comm."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from distnet.common.errors import UserError
from distnet.ft.deadline import DeadlineClock
from distnet.ft.faultplan import FATAL, Fault, chaos_plan, collect, parse_spec, plan_from_json
from distnet.ft.faultycomm import FaultyComm, flip_bit
from distnet.ft.integrity import check_reduced, param_digest


def test_spec_round_trip() -> None:
    for spec in ["crash:rank=2:step=5", "crash:rank=0:step=3:at=allreduce",
                 "slow:rank=1:step=2:seconds=0.05:steps=5", "kill:rank=3:step=1:attempt=1",
                 "hang:rank=2:step=6:at=allreduce", "hang:rank=1:step=0:at=evaluation"]:
        assert parse_spec(spec).to_spec() == spec


def test_json_plan_forms_agree() -> None:
    item = {"kind": "nan", "rank": 1, "step": 4}
    assert plan_from_json([item], 4, "t") == plan_from_json({"faults": [item]}, 4, "t")
    assert plan_from_json([item], 4, "t") == [Fault("nan", 1, 4)]


@pytest.mark.parametrize("world", [2, 3, 4, 5, 6])
@pytest.mark.parametrize("seed", range(5))
def test_chaos_is_seeded_and_keeps_a_survivor(seed: int, world: int) -> None:
    plan = chaos_plan(seed, world, count=8, max_step=40)
    assert plan == chaos_plan(seed, world, count=8, max_step=40)
    fatal = [f.rank for f in plan if f.kind in FATAL]
    assert len(fatal) == len(set(fatal)) <= world - 1
    assert all(0 <= f.rank < world and 2 <= f.step < 40 for f in plan)


def test_only_this_attempts_faults_must_fit_the_world() -> None:
    assert collect(None, ["crash:rank=3:step=1"], world=4)
    assert collect(None, ["crash:rank=3:step=1"], world=3, attempt=1)
    with pytest.raises(UserError, match="names rank 3"):
        collect(None, ["crash:rank=3:step=1"], world=3)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("world", [1, 2, 3, 5])
def test_checksum_passes_honest_sums_and_catches_flips(dtype: Any, world: int) -> None:
    rng = np.random.default_rng(world)
    parts = [rng.standard_normal(1000).astype(dtype) for _ in range(world)]
    reduced = np.sum(parts, axis=0, dtype=dtype)
    s = sum(float(p.sum(dtype=np.float64)) for p in parts)
    a = sum(float(np.abs(p).sum(dtype=np.float64)) for p in parts)
    assert check_reduced(reduced, s, a, world) is None
    flip_bit(reduced, seed=7)
    assert check_reduced(reduced, s, a, world) in ("checksum", "nonfinite")
    reduced[3] = np.nan
    assert check_reduced(reduced, s, a, world) == "nonfinite"


def test_digest_is_bitwise() -> None:
    x = np.linspace(0, 1, 50)
    y = x.copy()
    assert param_digest(x) == param_digest(y)
    y[7] = np.nextafter(y[7], 2)
    assert param_digest(x) != param_digest(y)


class FakeComm:
    """Records calls; Allreduce doubles the buffer as a stand-in for a reduction."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def Allreduce(self, send: Any, recv: Any, op: Any = None) -> None:  # noqa: N802
        self.calls.append("Allreduce")
        recv *= 2

    def Recv(self, buf: Any, source: int = 0, tag: int = 0) -> None:  # noqa: N802
        self.calls.append(f"Recv({source},{tag})")

    def Sendrecv(self, sendbuf: Any, dest: int, sendtag: int = 0, recvbuf: Any = None,  # noqa: N802
                 source: int = 0, recvtag: int = 0) -> None:
        self.calls.append("Sendrecv")
        recvbuf[...] = sendbuf

    def Get_size(self) -> int:  # noqa: N802
        return 4

    def Dup(self) -> FakeComm:  # noqa: N802
        return FakeComm()


def test_faulty_comm_passes_through_and_injects() -> None:
    faults = [Fault("bitflip", 0, 2), Fault("drop", 0, 3)]
    comm = FaultyComm(FakeComm(), faults)
    buf = np.ones(8)
    comm.begin_step(1)
    comm.Allreduce(None, buf)
    assert np.all(buf == 2) and comm.Get_size() == 4
    comm.begin_step(2)
    comm.Allreduce(None, buf)
    assert np.count_nonzero(buf != 4) == 1  # one flipped entry
    comm.begin_step(3)
    out = np.zeros(8)
    comm.Sendrecv(np.ones(8), 1, 0, out, 3, 9)  # dropped: only the receive happens
    assert comm.comm.calls[-1] == "Recv(3,9)" and not out.any()
    comm.Sendrecv(np.ones(8), 1, 0, out, 3, 9)  # one-shot: the next one goes through
    assert out.all()
    dup = comm.Dup()
    assert dup.state is comm.state and len(comm.all_comms()) == 2


def test_faulty_comm_crashes_inside_the_reduction() -> None:
    comm = FaultyComm(FakeComm(), [])
    hits: list[int] = []
    comm.begin_step(0, crash=lambda: hits.append(1))
    comm.Sendrecv(np.ones(2), 1, 0, np.zeros(2), 1, 0)
    assert not hits  # a p2p algorithm dies after its first exchange...
    comm.Sendrecv(np.ones(2), 1, 0, np.zeros(2), 1, 0)
    assert hits
    comm.begin_step(1, crash=lambda: hits.append(2))
    comm.Allreduce(None, np.ones(2))
    assert hits[-1] == 2  # ...a collective before it contributes


def test_deadline_clock_warms_up_then_follows_step_times() -> None:
    clock = DeadlineClock()
    assert clock.deadline_s() == 30.0
    clock.intervals.extend([0.01, 0.02, 0.01])
    clock.relaxed = False
    assert clock.deadline_s() == pytest.approx(10 * 0.01 + 5.0)
    clock.relax()
    assert clock.deadline_s() == 30.0
    assert DeadlineClock(fixed_s=2.5).deadline_s() == 2.5

"""In-process pieces of fencing and of the network-straggler check: who may fence, how a rank
on another host is reached, the link pairing, the judge."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest

from distnet.common.errors import UserError
from distnet.common.procgroup import FENCE_AGENT_ENV
from distnet.ft import fence
from distnet.observe import linkcheck


@pytest.mark.parametrize("heard,members,ok", [
    (2, 3, True), (1, 3, False), (4, 6, True), (2, 6, False), (3, 6, False), (1, 2, False),
    (3, 5, True), (1, 1, True),
])
def test_only_a_strict_majority_fences(heard: int, members: int, ok: bool) -> None:
    assert fence.may_fence(heard, members) is ok


def test_fence_on_this_host_is_sigkill() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert fence.kill("here", [child.pid], "here") == "SIGKILL"
        assert child.wait(timeout=20) == -9
        # gone already is not an error: a pid above the kernel's maximum stands for a process
        # that has exited (the reaped child's own pid may have been reused meanwhile)
        pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
        fence.kill("here", [pid_max + 1], "here")
    finally:
        child.kill()


def test_fence_on_this_host_spares_a_reused_pid() -> None:
    """A pid whose start time is not the rank's any more belongs to somebody else now."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        start = fence.start_ticks(child.pid)
        assert start is not None and start > 0
        fence.kill("here", [child.pid], "here", [start + 1])  # "the rank started earlier"
        assert child.poll() is None  # spared
        fence.kill("here", [child.pid], "here", [start])
        assert child.wait(timeout=20) == -9
    finally:
        child.kill()


def test_fence_without_pidfd_checks_then_kills(monkeypatch: pytest.MonkeyPatch) -> None:
    """A kernel without pidfd_open (or a seccomp filter) falls back to the check and kill."""
    def no_pidfd(pid: int) -> int:
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(os, "pidfd_open", no_pidfd)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        start = fence.start_ticks(child.pid)
        assert start is not None
        fence.kill("here", [child.pid], "here", [start + 1])
        assert child.poll() is None  # spared
        assert fence.kill("here", [child.pid], "here", [start]) == "SIGKILL"
        assert child.wait(timeout=20) == -9
    finally:
        child.kill()


def test_fence_on_another_host_goes_through_the_agent(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "agent.log"
    agent = tmp_path / "agent"
    agent.write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    agent.chmod(0o755)
    monkeypatch.setenv(FENCE_AGENT_ENV, f"{agent} -o BatchMode=yes")
    assert fence.kill("node07", [4242, 4243], "node01") == "through the agent on node07"
    assert log.read_text().split() == ["-o", "BatchMode=yes", "node07", "kill", "-KILL", "4242",
                                       "4243"]


def test_fence_on_another_host_without_agent_or_failing_agent(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(FENCE_AGENT_ENV, raising=False)
    with pytest.raises(fence.FenceError, match="no launcher agent"):
        fence.kill("node07", [os.getpid()], "node01")
    agent = tmp_path / "agent"
    agent.write_text("#!/bin/sh\necho 'no route to host' >&2\nexit 255\n")
    agent.chmod(0o755)
    monkeypatch.setenv(FENCE_AGENT_ENV, str(agent))
    with pytest.raises(fence.FenceError, match="exited 255: no route to host"):
        fence.kill("node07", [os.getpid()], "node01")


@pytest.mark.parametrize("size", range(1, 9))
def test_link_pairing_meets_every_pair_once(size: int) -> None:
    rounds = size - 1 + size % 2
    met = []
    for rnd in range(rounds):
        peers = {r: linkcheck.partner(r, rnd, size) for r in range(size)}
        for r, p in peers.items():
            assert p is None or (p != r and peers[p] == r)  # a round is a matching
        met += [(r, p) for r, p in peers.items() if p is not None and r < p]
    assert sorted(met) == list(itertools.combinations(range(size), 2))


def test_judge_names_the_rank_whose_every_link_is_slow() -> None:
    fast, slow = 0.002, 0.9
    measured = {0: {1: fast, 2: slow, 3: fast}, 1: {0: fast, 2: slow, 3: fast},
                2: {0: slow, 1: slow, 3: slow}, 3: {0: fast, 1: fast, 2: slow}}
    got = linkcheck.judge(measured)
    assert got.slow == [2]
    assert got.line().startswith("straggler: world rank 2 (network): its fastest link moved "
                                 "256 KiB in 900.0 ms, 450x the median rank's 2.0 ms")


def test_judge_blames_nobody_for_one_slow_core_link_or_two_ranks() -> None:
    fast, slow = 0.002, 0.9
    one_link = {0: {1: slow, 2: fast}, 1: {0: slow, 2: fast}, 2: {0: fast, 1: fast}}
    assert linkcheck.judge(one_link).slow == []
    assert "straggler: none on the network" in linkcheck.judge(one_link).line()
    assert linkcheck.judge({0: {1: slow}, 1: {0: slow}}).slow == []


def test_reduce_log_sees_a_lasting_slowdown_only() -> None:
    log = linkcheck.ReduceLog()
    for t in [0.05] + [0.002] * 10 + [0.06] * 10:
        log.add(t)
    assert log.slowed_down()
    steady = linkcheck.ReduceLog()
    for t in [0.05] + [0.002] * 20 + [0.004] * 5:  # noise, not a cut
        steady.add(t)
    assert not steady.slowed_down()
    short = linkcheck.ReduceLog()
    for t in [0.002, 0.2, 0.2]:
        short.add(t)
    assert not short.slowed_down()


@pytest.mark.parametrize("value", ["ssh -o 'BatchMode=yes", "no-such-agent-program-dn -x"])
def test_a_malformed_fence_agent_is_bad_input(value: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FENCE_AGENT_ENV, value)
    with pytest.raises(UserError, match=FENCE_AGENT_ENV):
        fence.agent()
    with pytest.raises(fence.FenceError):  # and a kill through it says so, no traceback
        fence.kill("node07", [4242], "node01")

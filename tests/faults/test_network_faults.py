"""Faults of nodes and links on the emulated cluster (topology emulate), through the real CLI.

Each scenario strikes mid-run from outside and asserts what the rest of the suite asserts:
finished on the expected survivors with bitwise-identical parameters, final loss within 2 % of
the fault-free run, every sample used exactly once, recovery reported — or, with `--ft none`,
a clear error line well within the timeout and no process left behind. Skipped with the reason
where network namespaces cannot be made (no root).

Layout: leaf-spine, 2 leaves x 2 hosts, 2 spines, 1 Gb/s. Six ranks, two per host on h0-h2, for
the node crash; three ranks, one per host (h0, h1 on leaf0; h2 on leaf1), for the rest.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.emulate.conftest import SKIP, unique_prefix
from tests.faults.harness import (
    assert_finished,
    assert_loss_close,
    assert_recovery,
    assert_samples_exactly_once,
)
from tests.faults.netfaults import (
    EPOCHS,
    JOB_TIMEOUT_S,
    SPEC,
    Job,
    assert_no_orphans,
    cli,
    kill_host,
    train_job,
)
from topology.emulate import cluster

pytestmark = pytest.mark.skipif(SKIP is not None, reason=SKIP or "")
DEADLINE = ["--deadline-s", "5"]


class Emulated:
    def __init__(self, prefix: str, tmp: Path) -> None:
        self.prefix, self.tmp = prefix, tmp
        self.refs: dict[tuple[object, ...], Job] = {}
        self.hosts = [f"{prefix}h{i}" for i in range(4)]

    def job(self, name: str, n: int, rph: int, ft: str, extra: list[str] | None = None,
            strike: Callable[[], object] | None = None, attempt: int = 0,
            timeout_s: float = JOB_TIMEOUT_S, fault_step: int | None = None,
            **kw: Any) -> Job:
        d = self.tmp / name
        d.mkdir(exist_ok=True)
        return train_job(self.prefix, d, name, n, rph, ft, extra or [], strike,
                         attempt=attempt, timeout_s=timeout_s, fault_step=fault_step, **kw)

    def reference(self, n: int, rph: int, extra: tuple[str, ...] = ()) -> Job:
        key = (n, rph, *extra)
        if key not in self.refs:
            ref = self.job(f"ref{n}x{rph}{''.join(extra)}", n, rph, "ulfm", list(extra))
            assert ref.run.result.returncode == 0, ref.run.tail()
            assert not ref.run.events("recovery")
            self.refs[key] = ref
        return self.refs[key]

    def restore(self) -> None:
        """Every cable up at full rate again (a scenario's strike undone, also on failure)."""
        for link in cluster.status(self.prefix)["links"]:
            if not link["up"]:
                cli(self.prefix, "link", "up", link["a"], link["b"])
        cli(self.prefix, "link", "rate", "h2", "leaf1", "1")


@pytest.fixture(scope="module")
def emu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulated]:
    tmp = tmp_path_factory.mktemp("netfaults")
    old = os.environ.get("DISTNET_EMULATE_DIR")
    os.environ["DISTNET_EMULATE_DIR"] = str(tmp / "state")
    e = Emulated(unique_prefix("f"), tmp)
    try:
        cli(e.prefix, "up", "--topology", SPEC, "--link-gbps", "1", "--json")
        yield e
    finally:
        try:
            cli(e.prefix, "down")
        finally:
            if old is None:
                os.environ.pop("DISTNET_EMULATE_DIR", None)
            else:
                os.environ["DISTNET_EMULATE_DIR"] = old


@pytest.fixture
def net(emu: Emulated) -> Iterator[Emulated]:
    try:
        yield emu
    finally:
        emu.restore()
        assert_no_orphans(emu.hosts)


def link(e: Emulated, *args: str) -> Callable[[], object]:
    return lambda: cli(e.prefix, "link", *args)


def assert_clean_failure(job: Job, expect: str) -> None:
    """--ft none (or an honest abort): non-zero exit, the reason in one clear line, no hang."""
    assert job.run.result.returncode != 0, job.run.tail()
    assert expect in job.run.output, job.run.tail()
    assert job.run.events("done") == [], job.run.tail()


# ---- node crash: both ranks of a host at once ---------------------------------------------
def test_node_crash_two_ranks_per_host(net: Emulated) -> None:
    ref = net.reference(6, 2)
    job = net.job("node-crash", 6, 2, "ulfm", strike=lambda: kill_host(net.hosts[2]))
    assert_finished(job.run, 4)
    assert_loss_close(job.run, ref.run)
    assert_samples_exactly_once(job.run, epochs=EPOCHS)
    assert_recovery(job.run, [4, 5])


def test_node_crash_ft_none(net: Emulated) -> None:
    job = net.job("node-crash-none", 6, 2, "none", strike=lambda: kill_host(net.hosts[2]))
    assert job.run.result.returncode != 0, job.run.tail()
    assert job.run.events("done") == [], job.run.tail()
    said = " ".join(job.run.output.split())  # mpirun wraps its lines
    # whichever the runtime notices first: the dead ranks, or a survivor's closed socket
    assert ("exited on signal 9" in said or "peer process has unexpectedly disconnected"
            in said), job.run.tail()


# ---- partition: a host's only data cable down, the management network up --------------------
def assert_one_brain(job: Job, cut_off: list[int]) -> None:
    """No split brain: one side finished, the cut-off ranks ended (by their own hand or fenced
    by the majority) and never trained on alone: one run's worth of records, no second copy."""
    assert len(job.run.events("done")) == 1 and len(job.run.events("ft_done")) == 1, \
        job.run.tail()
    assert not set(cut_off) & set(job.run.events("ft_done")[0]["members"]), job.run.tail()
    said = " ".join(job.run.output.split())
    assert all(f"fencing world rank {r}" in said for r in cut_off) or "cut off (heard" in said, \
        job.run.tail()


def test_partition_majority_goes_on(net: Emulated) -> None:
    ref = net.reference(3, 1)
    job = net.job("partition", 3, 1, "ulfm", DEADLINE, strike=link(net, "down", "h2", "leaf1"))
    # The cut lands before or after the step's arrival notes: the majority sees h2's rank as
    # never arrived, or (every note came) as silent to the probe; h2's rank hears nobody. The
    # majority fences it through the launcher's agent (management network), the minority ends
    # itself: either way ULFM shrinks 3 -> 2 and the run goes on in the same job.
    assert job.run.result.returncode == 0, job.run.tail()
    assert_finished(job.run, 2)
    assert_one_brain(job, [2])
    assert_loss_close(job.run, ref.run)
    assert_samples_exactly_once(job.run, epochs=EPOCHS)
    assert_recovery(job.run, [2])


def test_partition_of_a_two_rank_host(net: Emulated) -> None:
    """The cut-off side is two ranks that still hear each other: 2 of 6 is no majority."""
    ref = net.reference(6, 2)
    # 6 ranks take only 17 steps: early and slower steps, so the strike (a CLI call, seconds on a
    # loaded machine) still lands mid-run
    job = net.job("partition-6", 6, 2, "ulfm", DEADLINE, strike=link(net, "down", "h2", "leaf1"),
                  at_step=2, pace_s=0.3)
    assert job.run.result.returncode == 0, job.run.tail()
    assert_finished(job.run, 4)
    assert_one_brain(job, [4, 5])
    assert_loss_close(job.run, ref.run)
    assert_samples_exactly_once(job.run, epochs=EPOCHS)
    assert_recovery(job.run, [4, 5])


def test_partition_ft_none(net: Emulated) -> None:
    job = net.job("partition-none", 3, 1, "none", DEADLINE,
                  strike=link(net, "down", "h2", "leaf1"))
    assert_clean_failure(job, "deadline")


# ---- a switch uplink down: ECMP re-converges, no recovery ---------------------------------
def test_uplink_down_reconverges_without_recovery(net: Emulated) -> None:
    ref = net.reference(3, 1)
    job = net.job("uplink", 3, 1, "ulfm", strike=link(net, "down", "leaf0", "spine0"))
    assert_finished(job.run, 3)
    assert not job.run.events("recovery"), job.run.events("recovery")
    assert_loss_close(job.run, ref.run)
    assert_samples_exactly_once(job.run, epochs=EPOCHS)
    print(f"uplink down: step-time hiccup {1e3 * job.hiccup_s():.1f} ms")


def test_uplink_down_ft_none(net: Emulated) -> None:
    job = net.job("uplink-none", 3, 1, "none", strike=link(net, "down", "leaf0", "spine0"))
    assert job.run.result.returncode == 0, job.run.tail()
    assert job.run.events("done") and not job.run.events("recovery")


# ---- a slow link: a straggler of the network, not a failure --------------------------------
# The suite's 15 KB gradient fits the emulator's 128 KiB shaper burst refilled at 2 Mb/s, so the
# steps hardly slow down (no straggler to name); a 8x bigger model at 5 Mb/s does.
SLOW_LINK_MODEL = ("--hidden", "256")
SLOW_LINK_GBPS = "0.005"


def test_slow_link_no_false_recovery(net: Emulated) -> None:
    ref = net.reference(3, 1, SLOW_LINK_MODEL)
    job = net.job("slow-link", 3, 1, "ulfm", list(SLOW_LINK_MODEL),
                  strike=link(net, "rate", "h2", "leaf1", SLOW_LINK_GBPS))
    assert_finished(job.run, 3)
    assert not job.run.events("recovery"), job.run.events("recovery")
    assert_loss_close(job.run, ref.run)
    assert_samples_exactly_once(job.run, epochs=EPOCHS)
    assert job.hiccup_s() > 0
    # named by rank as a straggler of the network (its links measured), not of compute
    network = job.run.one("straggler")["network"]
    assert network["slow_ranks"] == [2], network
    assert "straggler: world rank 2 (network)" in job.run.output, job.run.tail()


def test_slow_link_ft_none(net: Emulated) -> None:
    job = net.job("slow-link-none", 3, 1, "none",
                  strike=link(net, "rate", "h2", "leaf1", "0.002"))
    assert job.run.result.returncode == 0, job.run.tail()
    assert job.run.events("done")


# ---- a hung rank on another host: fenced through the launcher's agent -----------------------
def test_hung_rank_on_another_host_fenced(net: Emulated) -> None:
    ref = net.reference(3, 1)
    job = net.job("hang-remote", 3, 1, "ulfm", [*DEADLINE, "--inject", "hang:rank=2:step=6"])
    assert job.run.result.returncode == 0, job.run.tail()
    assert_finished(job.run, 2)
    assert "through the agent" in job.run.output, job.run.tail()
    assert_loss_close(job.run, ref.run)
    assert_samples_exactly_once(job.run, epochs=EPOCHS)
    assert_recovery(job.run, [2])


def test_hung_rank_on_another_host_ft_none(net: Emulated) -> None:
    job = net.job("hang-remote-none", 3, 1, "none", [*DEADLINE, "--inject", "hang:rank=2:step=6"])
    assert_clean_failure(job, "deadline")


# ---- a rank frozen inside the reduction after it arrived, on another host --------------------
def test_frozen_in_reduction_on_another_host_fenced(net: Emulated) -> None:
    ref = net.reference(3, 1)
    job = net.job("freeze-remote", 3, 1, "ulfm",
                  [*DEADLINE, "--inject", "hang:rank=2:step=6:at=allreduce"])
    said = " ".join(job.run.output.split())
    assert job.run.result.returncode == 0, job.run.tail()
    assert_finished(job.run, 2)
    # every note came, so the probe found it: not a lost message, and nobody else was fenced
    assert "did not answer the probe" in said and "through the agent" in said, job.run.tail()
    assert_loss_close(job.run, ref.run)
    assert_samples_exactly_once(job.run, epochs=EPOCHS)
    assert_recovery(job.run, [2])


def test_frozen_in_reduction_on_another_host_ft_none(net: Emulated) -> None:
    job = net.job("freeze-remote-none", 3, 1, "none",
                  [*DEADLINE, "--inject", "hang:rank=2:step=6:at=allreduce"])
    assert_clean_failure(job, "deadline")

"""Real packet loss and delay: `tc netem` on the loopback of a private network namespace.

Needs root, `ip netns` and the sch_netem kernel module; skipped cleanly where any is missing
(many containers have network namespaces but no netem). TCP retransmits what netem drops, so
the run must give exactly the fault-free parameters, only later.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from distnet.training.metrics import read_metrics
from tests.faults.harness import BASE_ARGS, Run, assert_finished
from tests.proc import PYTHON, mpirun_cmd, run


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20, check=False)


@pytest.fixture
def lossy_namespace() -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.skip("netem needs root")
    name = f"distnet-{uuid.uuid4().hex[:8]}"
    try:
        made = _ip("netns", "add", name)
    except FileNotFoundError:
        pytest.skip("no `ip` command")
    if made.returncode:
        pytest.skip(f"no network namespaces here: {made.stderr.strip()}")
    try:
        _ip("netns", "exec", name, "ip", "link", "set", "lo", "up")
        netem = _ip("netns", "exec", name, "tc", "qdisc", "add", "dev", "lo", "root", "netem",
                    "delay", "2ms", "1ms", "loss", "1%")
        if netem.returncode:
            pytest.skip(f"tc netem unavailable: {netem.stderr.strip()}")
        yield name
    finally:
        _ip("netns", "del", name)


def test_training_through_lossy_loopback(lossy_namespace: str, tmp_path: Path,
                                         reference: Run) -> None:
    metrics = tmp_path / "netem.jsonl"
    cmd = ["ip", "netns", "exec", lossy_namespace,
           *mpirun_cmd(4, PYTHON, "-m", "distnet.train", *BASE_ARGS, "--ft", "ulfm",
                       "--metrics", str(metrics), ft=True)]
    res = run(cmd, timeout_s=300)
    assert not res.timed_out and res.returncode == 0, res.stderr[-3000:]
    got = Run(res, read_metrics(str(metrics)), tmp_path)
    ft = assert_finished(got, survivors=4)
    assert ft["param_digests"][0] == reference.one("ft_done")["param_digests"][0]

"""The emulated network for real: build and tear down, MPI over it, training, a ULFM crash.

Links run at 1 Gb/s here: fast enough for CI, still slower than the loopback, and no timing is
asserted (the machine is shared); the benchmarks measure speed.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from distnet.common.procgroup import run_group
from distnet.training.metrics import read_metrics
from tests.emulate.conftest import Cluster, needs_netns
from tests.proc import PYTHON, ROOT
from topology.emulate import cluster, kernel, launch, state

pytestmark = needs_netns
SPEC = "leaf-spine:leaves=2,spines=2,hosts=2"


def _qdiscs(ns: str) -> str:
    return subprocess.run(["tc", "-n", ns, "qdisc", "show"], capture_output=True,
                          text=True).stdout


def test_up_status_link_down_leaves_nothing(emulated: Cluster) -> None:
    plan = emulated.up(SPEC, 0.5)
    st = cluster.status(emulated.prefix)
    assert st["up"] and len(st["hosts"]) == 4 and len(st["links"]) == 8
    assert all(h["namespace"].startswith(emulated.prefix) for h in st["hosts"])
    assert "tbf" in _qdiscs(plan.hosts[0].namespace)
    leaf = plan.switches[0]
    routes = subprocess.run(["ip", "-n", leaf, "route"], capture_output=True, text=True).stdout
    assert routes.count("nexthop via") == 4  # two remote hosts, two spines each
    cluster.link(emulated.prefix, "leaf0", "spine0", "down")
    st = cluster.status(emulated.prefix)
    assert [c["up"] for c in st["links"]].count(False) == 1
    routes = subprocess.run(["ip", "-n", leaf, "route"], capture_output=True, text=True).stdout
    assert "nexthop" not in routes and routes.count("via") == 2  # both via the survivor
    cluster.link(emulated.prefix, "leaf0", "spine0", "up")
    cluster.set_rate(emulated.prefix, "h0", "leaf0", 0.25)
    assert "250Mbit" in _qdiscs(plan.hosts[0].namespace)
    gone = cluster.down(emulated.prefix)
    assert len(gone) >= len(plan.namespaces)
    assert cluster.leftovers(plan) == []
    assert not state.state_path(emulated.prefix).exists()
    assert not set(plan.namespaces) & kernel.existing_namespaces()


def test_down_after_a_crashed_up(emulated: Cluster) -> None:
    """A half-built cluster (the state file is written first) is removed exactly."""
    plan = emulated.up(SPEC)
    kernel.run(["ip", "netns", "del", plan.switches[-1]])  # as if up died part-way
    cluster.down(emulated.prefix)
    assert cluster.leftovers(plan) == []


def _mpirun(plan: cluster.Plan, n: int, args: list[str], timeout_s: float = 240, **kw: object):
    res = launch.run(plan, n, [PYTHON, *args], timeout_s=timeout_s, extra_flags="", **kw)
    assert not res.timed_out, f"timed out\n{res.stderr[-3000:]}"
    return res


def test_allreduce_oracle_across_four_hosts(emulated: Cluster) -> None:
    plan = emulated.up(SPEC)
    res = _mpirun(plan, 4, [str(ROOT / "tests" / "emulate" / "oracle.py")],
                  placement="scattered")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "oracle ok" in res.stdout and "4 shared-memory nodes" in res.stdout, res.stdout


@pytest.mark.parametrize("which", ["written by up", "launch/hostfile.example"])
def test_hostfiles_used_by_plain_mpirun(which: str, emulated: Cluster) -> None:
    """Both hostfiles, unchanged, with nothing but the agent flags, start ranks in the hosts
    (hostfile.example names node01, node02: the agent maps them to h0, h1)."""
    plan = emulated.up(SPEC)
    if which == "written by up":
        hostfile, nodes = launch.hostfile_path(plan.prefix), 4
    else:
        hostfile, nodes = ROOT / "launch" / "hostfile.example", 2
    cmd = [launch.mpirun_cmd(plan, 1, ["true"])[0], "--hostfile", str(hostfile), "-n", "4",
           "--map-by", "node", *launch.base_flags(plan), PYTHON,
           str(ROOT / "tests" / "emulate" / "oracle.py")]
    res = run_group(cmd, 240)
    assert not res.timed_out and res.returncode == 0, res.stderr[-3000:]
    assert "oracle ok" in res.stdout and f"{nodes} shared-memory nodes" in res.stdout, res.stdout


def test_training_run_and_ulfm_crash(emulated: Cluster, tmp_path: Path) -> None:
    plan = emulated.up(SPEC)
    base = ["-m", "distnet.train", "--samples", "1200", "--epochs", "1", "--hidden", "32",
            "--batch-size", "32", "--seed", "3", "--profile"]
    metrics = tmp_path / "train.jsonl"
    res = _mpirun(plan, 4, [*base, "--metrics", str(metrics)], placement="scattered")
    assert res.returncode == 0, res.stderr[-3000:]
    recs = read_metrics(str(metrics))
    assert any(r.get("event") == "done" for r in recs), recs[-3:]
    steps = [r for r in recs if r.get("event") == "step"]
    assert steps and all(r["world_size"] == 4 and r["allreduce_s"] > 0 for r in steps)

    crashed = tmp_path / "ulfm.jsonl"
    res = _mpirun(plan, 4, [*base, "--metrics", str(crashed), "--ft", "ulfm",
                            "--inject", "crash:rank=2:step=5"], ft=True)
    recs = read_metrics(str(crashed))
    events = [r for r in recs if r.get("event") == "recovery"]
    assert events and events[0]["failed_ranks"] == [2], res.stderr[-3000:]
    done = [r for r in recs if r.get("event") == "ft_done"]
    assert done and done[-1]["world_size"] == 3 and done[-1]["params_identical"], recs[-3:]

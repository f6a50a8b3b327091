"""Fixtures for tests on an emulated network: skip without root or namespaces; every cluster
gets its own prefix and state dir and is torn down after the test, also when the test fails."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from topology.emulate import cluster


def namespaces_unavailable() -> str | None:
    """Why this machine cannot build namespaces, or None when it can."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "emulated network needs root (ip netns add)"
    probe = f"dnprobe{os.getpid()}"
    try:
        res = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True,
                             timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot run ip netns: {exc}"
    if res.returncode:
        return f"cannot make a network namespace: {res.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=20)
    return None


SKIP = namespaces_unavailable()
needs_netns = pytest.mark.skipif(SKIP is not None, reason=SKIP or "")


def unique_prefix(tag: str) -> str:
    return f"d{tag}{os.getpid() % 1000:03d}-"


class Cluster:
    def __init__(self, prefix: str, state_dir: Path) -> None:
        self.prefix = prefix
        self.state_dir = state_dir

    def up(self, spec: str, link_gbps: float = 1.0, **kw: object) -> cluster.Plan:
        return cluster.up(spec, link_gbps, prefix=self.prefix, **kw)  # type: ignore[arg-type]


@pytest.fixture
def emulated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    """A prefix and a private state dir; whatever got built is removed at the end."""
    monkeypatch.setenv("DISTNET_EMULATE_DIR", str(tmp_path / "state"))
    c = Cluster(unique_prefix("t"), tmp_path / "state")
    try:
        yield c
    finally:
        try:
            cluster.down(c.prefix)
        except Exception:  # noqa: BLE001 - nothing was built, or down already ran
            pass

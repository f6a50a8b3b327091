"""abort_job takes MPI_Abort outside ULFM and a plain non-zero exit under it (see its docstring)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from distnet.common.abort import FT_ENV, under_ulfm

# The fake comm's Abort exits 99, so the exit status says which path abort_job took.
_PROG = """
import sys
from distnet.common.abort import abort_job
class Comm:
    def Abort(self, status):
        print("abort", status, flush=True)
        sys.exit(99)
print("before", flush=True)
abort_job(Comm(), 3)
print("after", flush=True)
"""


def _run(ft: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != FT_ENV}
    if ft is not None:
        env[FT_ENV] = ft
    return subprocess.run([sys.executable, "-c", _PROG], env=env, capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize(("value", "expected"), [
    (None, False), ("", False), ("0", False), ("false", False),
    ("1", True), ("true", True), ("TRUE", True), ("yes", True),
])
def test_under_ulfm_reads_the_runtime_variable(monkeypatch: pytest.MonkeyPatch,
                                               value: str | None, expected: bool) -> None:
    monkeypatch.delenv(FT_ENV, raising=False)
    if value is not None:
        monkeypatch.setenv(FT_ENV, value)
    assert under_ulfm() is expected


def test_without_ulfm_the_job_is_ended_by_mpi_abort() -> None:
    done = _run(None)
    assert done.returncode == 99
    assert done.stdout.split() == ["before", "abort", "3"]


def test_under_ulfm_the_rank_exits_with_the_status_and_never_calls_abort() -> None:
    done = _run("1")
    assert done.returncode == 3
    assert done.stdout.split() == ["before"]

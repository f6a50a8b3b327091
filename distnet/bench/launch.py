"""Start `mpirun -n W python ...` from a benchmark without ever hanging.

A crashed rank can leave mpirun (or MPI_Finalize) waiting forever, so the child gets its own
session (process group) and the whole group is SIGKILLed on timeout and again once it is done,
which also reaps ranks that outlived mpirun.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Finished:
    returncode: int
    stdout: str
    stderr: str
    timed_out: bool


def mpirun_python(world: int, *args: str) -> list[str]:
    """The command line `mpirun -n world python args...` with this machine's needs added."""
    here = str(Path(sys.executable).parent)
    mpirun = shutil.which("mpirun", path=here) or shutil.which("mpirun") or "mpirun"
    cmd = [mpirun, "-n", str(world), "--oversubscribe"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-run-as-root")  # Open MPI refuses root without it
    return [*cmd, sys.executable, *args]


def run_group(cmd: list[str], timeout_s: float, env: dict[str, str] | None = None) -> Finished:
    """Run `cmd` in a new process group; kill the group on timeout and after it exits."""
    full_env = dict(os.environ)
    # The children must import this very checkout, wherever they start.
    full_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(PACKAGE_ROOT), full_env.get("PYTHONPATH", "")) if p)
    full_env.update(env or {})
    proc = subprocess.Popen(cmd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    timed_out = False
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(proc.pid)
        out, err = proc.communicate()
    finally:
        _kill_group(proc.pid)
    return Finished(proc.returncode, out, err, timed_out)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass

"""Start processes from tests safely: a hard timeout that kills the whole process group.

After a failure MPI_Finalize can hang and mpirun can leave orphaned ranks, so every test that
launches mpirun goes through `run`, which starts a new session and SIGKILLs the group on timeout
and on exit.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str
    timed_out: bool


def mpirun_cmd(n: int, *args: str, ft: bool = False) -> list[str]:
    """mpirun with what this machine needs: root allowed, oversubscription, optional ULFM."""
    mpirun = shutil.which("mpirun", path=str(Path(PYTHON).parent)) or "mpirun"
    cmd = [mpirun, "-n", str(n), "--oversubscribe"]
    if os.geteuid() == 0:
        cmd.append("--allow-run-as-root")
    if ft:
        cmd += ["--with-ft", "ulfm", "--mca", "btl", "tcp,self"]
    return [*cmd, *args]


def run(cmd: list[str], timeout_s: float, cwd: Path | None = None,
        env: dict[str, str] | None = None) -> Result:
    """Run cmd in its own process group; on timeout kill the group and report timed_out."""
    full_env = dict(os.environ)
    full_env.setdefault("OMP_NUM_THREADS", "1")
    full_env["PYTHONPATH"] = str(ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
    if env:
        full_env.update(env)
    proc = subprocess.Popen(
        cmd, cwd=cwd or ROOT, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
    )
    timed_out = False
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(proc.pid)
        out, err = proc.communicate()
    finally:
        _kill_group(proc.pid)  # stragglers left behind by a finished mpirun
    return Result(proc.returncode, out, err, timed_out)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def mpi_python(n: int, *args: str, timeout_s: float = 120, ft: bool = False,
               env: dict[str, str] | None = None, cwd: Path | None = None) -> Result:
    """`mpirun -n N python ARGS...` under a hard timeout."""
    return run(mpirun_cmd(n, PYTHON, *args, ft=ft), timeout_s, cwd=cwd, env=env)

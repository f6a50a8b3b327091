"""Start processes from tests safely, through `distnet.common.procgroup`: every test that launches
mpirun gets a hard timeout that SIGKILLs its whole process group (after a failure MPI_Finalize
can hang and mpirun can leave orphaned ranks)."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from distnet.common.procgroup import Finished, mpirun_prefix, run_group

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
Result = Finished


def mpirun_cmd(n: int, *args: str, ft: bool = False) -> list[str]:
    return [*mpirun_prefix(n, ft=ft), *args]


def run(cmd: list[str], timeout_s: float, cwd: Path | None = None,
        env: dict[str, str] | None = None) -> Result:
    """Run cmd in its own process group; on timeout kill the group and report timed_out.

    Open MPI's shared-memory segments go to a directory of this run's own, removed after it:
    a rank that a fault test kills (or a timeout) never unlinks its segment, and in /dev/shm
    it would outlive the test (13 of them after one CI run, 16 MiB each)."""
    parent = "/dev/shm" if os.path.isdir("/dev/shm") else None  # tmpfs: as fast as the default
    with tempfile.TemporaryDirectory(prefix="distnet-test-sm-", dir=parent) as segments:
        return run_group(cmd, timeout_s, env={"OMP_NUM_THREADS": "1",
                                              "OMPI_MCA_btl_sm_backing_directory": segments,
                                              **(env or {})}, cwd=cwd or ROOT)


def mpi_python(n: int, *args: str, timeout_s: float = 120, ft: bool = False,
               env: dict[str, str] | None = None, cwd: Path | None = None) -> Result:
    """`mpirun -n N python ARGS...` under a hard timeout."""
    return run(mpirun_cmd(n, PYTHON, *args, ft=ft), timeout_s, cwd=cwd, env=env)

"""Start processes from tests safely, through `distnet.common.procgroup`: every test that launches
mpirun gets a hard timeout that SIGKILLs its whole process group (after a failure MPI_Finalize
can hang and mpirun can leave orphaned ranks)."""

from __future__ import annotations

import sys
from pathlib import Path

from distnet.common.procgroup import Finished, mpirun_prefix, run_group

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
Result = Finished


def mpirun_cmd(n: int, *args: str, ft: bool = False) -> list[str]:
    return [*mpirun_prefix(n, ft=ft), *args]


def run(cmd: list[str], timeout_s: float, cwd: Path | None = None,
        env: dict[str, str] | None = None) -> Result:
    """Run cmd in its own process group; on timeout kill the group and report timed_out."""
    return run_group(cmd, timeout_s, env={"OMP_NUM_THREADS": "1", **(env or {})},
                     cwd=cwd or ROOT)


def mpi_python(n: int, *args: str, timeout_s: float = 120, ft: bool = False,
               env: dict[str, str] | None = None, cwd: Path | None = None) -> Result:
    """`mpirun -n N python ARGS...` under a hard timeout."""
    return run(mpirun_cmd(n, PYTHON, *args, ft=ft), timeout_s, cwd=cwd, env=env)

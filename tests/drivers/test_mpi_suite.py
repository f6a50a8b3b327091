"""Run tests/mpi under mpirun for several world sizes, each under a hard timeout.

pytest-mpi's `mpi(min_size=N)` marks skip tests in worlds that are too small; the world sizes
below cover 1, powers of two and non-powers of two (3, 5, 6) as the style guide asks.
"""

import pytest

from tests.proc import ROOT, mpi_python

WORLD_SIZES = [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("n", WORLD_SIZES)
def test_mpi_suite(n: int) -> None:
    res = mpi_python(
        n, "-m", "mpi4py", "-m", "pytest", str(ROOT / "tests" / "mpi"), "--with-mpi", "-q",
        "-p", "no:cacheprovider", "-x", timeout_s=600,
    )
    tail = (res.stdout + res.stderr)[-4000:]
    assert not res.timed_out, f"mpirun -n {n} timed out\n{tail}"
    # exit code 5 means no test selected for this world size: fine.
    assert res.returncode in (0, 5), f"mpirun -n {n} failed ({res.returncode})\n{tail}"

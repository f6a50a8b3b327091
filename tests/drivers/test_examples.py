"""docs/examples run as documented and check their own results (mpirun under a hard timeout)."""

import pytest

from tests.proc import ROOT, mpi_python

RING_BY_HAND = ROOT / "docs" / "examples" / "ring_by_hand.py"


@pytest.mark.parametrize("n", [1, 3, 4])
def test_ring_by_hand_matches_its_closed_form(n: int) -> None:
    res = mpi_python(n, str(RING_BY_HAND), timeout_s=120)
    out = res.stdout + res.stderr
    assert not res.timed_out, f"mpirun -n {n} timed out\n{out[-2000:]}"
    assert res.returncode == 0, f"mpirun -n {n} failed ({res.returncode})\n{out[-2000:]}"
    assert f"on {n} ranks matches the closed form ({2 * (n - 1)} messages per rank)" in res.stdout

"""The seeded hostile-input fuzz (tests/fuzz_hostile.py), one process per group, each under a
hard timeout: every CLI's flags and every file reader (npz, csv, idx, checkpoint, metrics,
fault plan, tune file, custom topology, calibration file)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.proc import PYTHON, ROOT, run

GROUP_LIMIT_S = 240  # a hang guard for the whole group; an example's own limit is 30 s


@pytest.mark.parametrize("group", ["topology", "whatif", "train", "bench", "supervise", "files"])
def test_hostile_values_exit_0_or_2_without_traceback(group: str, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    res = run([PYTHON, str(ROOT / "tests" / "fuzz_hostile.py"), group], GROUP_LIMIT_S,
              env={"HOME": str(home), "DISTNET_FUZZ_EXAMPLES": "100"}, cwd=tmp_path)
    assert not res.timed_out, f"fuzz {group} exceeded {GROUP_LIMIT_S} s\n{res.stderr[-3000:]}"
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]

"""launch/slurm.sbatch unchanged under a real single-node SLURM (launch/slurm-local.sh): sbatch
it, wait, check the metrics file; the daemons are stopped by their pid files afterwards."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from distnet.common.procgroup import run_group
from distnet.training.metrics import read_metrics
from tests.proc import ROOT

NEEDED = ("munged", "slurmctld", "slurmd", "sbatch")
MISSING = [b for b in NEEDED if shutil.which(b) is None]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(bool(MISSING), reason=f"needs Debian's slurm-wlm and munge ({MISSING})"),
    pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root"),
]
SCRIPT = str(ROOT / "launch" / "slurm-local.sh")


def _alive(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def test_sbatch_runs_the_template_unchanged(tmp_path: Path) -> None:
    # not under tmp_path: munged runs as user munge and pytest's temp dirs are root-only
    sdir, work = Path(f"/tmp/dn-slurm-{os.getpid()}"), tmp_path / "job"
    work.mkdir()
    env = {"DN_SLURM_DIR": str(sdir), "SLURM_CONF": str(sdir / "slurm.conf"),
           "DISTNET_VENV": str(Path(os.sys.executable).parent.parent),
           "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
    pids: list[Path] = []
    try:
        up = run_group(["bash", SCRIPT, "up"], 120, env=env)
        assert up.returncode == 0, up.stdout + up.stderr
        pids = [sdir / f for f in ("munged.pid", "slurmctld.pid", "slurmd.pid")]
        assert all(_alive(p) for p in pids)
        job = run_group(["sbatch", "--wait", "--nodes=1", "--ntasks-per-node=2",
                         f"--chdir={work}", str(ROOT / "launch" / "slurm.sbatch"),
                         "--epochs", "1", "--samples", "2000"], 300, env=env)
        assert job.returncode == 0, job.stdout + job.stderr
        job_id = job.stdout.split()[-1]
        recs = read_metrics(str(work / "runs" / f"{job_id}.jsonl"))
        done = [r for r in recs if r.get("event") == "done"]
        assert done and done[0]["world_size"] == 2, recs[-3:]
    finally:
        saved = {p: p.read_text() for p in pids if p.exists()}
        run_group(["bash", SCRIPT, "down"], 120, env=env)
    for text in saved.values():
        pid = int(text.strip())
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not sdir.exists()

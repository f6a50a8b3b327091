"""launch/placement.sh's decision (flags from ranks, cores, MPIRUN_FLAGS) and what
launch/local.sh makes of it: oversubscribed ranks pinned in blocks, the bench's placement line."""

import os
import socket
import subprocess

import pytest

from distnet.bench import report
from tests.proc import ROOT, run

PLACEMENT = ROOT / "launch" / "placement.sh"
PIN = ["--oversubscribe", "--map-by", "core:oversubscribe", "--bind-to", "core:overload-allowed"]


def placement_flags(ranks: int, cores: int, user: str = "") -> list[str]:
    res = subprocess.run(["bash", "-c", 'source "$0"; placement_flags "$1" "$2" "$3"',
                          str(PLACEMENT), str(ranks), str(cores), user],
                         capture_output=True, text=True, timeout=30, check=True)
    return res.stdout.split()


@pytest.mark.parametrize("ranks,cores", [(1, 2), (2, 2), (4, 8)])
def test_a_core_per_rank_adds_nothing(ranks: int, cores: int) -> None:
    assert placement_flags(ranks, cores) == []  # Open MPI binds these itself


@pytest.mark.parametrize("ranks,cores", [(3, 2), (4, 2), (8, 2), (2, 1)])
def test_more_ranks_than_cores_are_pinned(ranks: int, cores: int) -> None:
    assert placement_flags(ranks, cores) == PIN
    assert placement_flags(ranks, cores, "--mca btl tcp,self --with-ft ulfm") == PIN


@pytest.mark.parametrize("user", ["--bind-to none", "--map-by slot", "-bind-to core",
                                  "--mca btl tcp,self --rankfile rf", "--cpu-set 0,1",
                                  "--map-by=ppr:2:core", "-N 4", "--npernode 4",
                                  "--ppr 2:core"])
def test_the_users_placement_wins(user: str) -> None:
    assert placement_flags(4, 2, user) == ["--oversubscribe"]


@pytest.mark.parametrize("var", ["OMPI_MCA_hwloc_base_binding_policy",
                                 "PRTE_MCA_rmaps_default_mapping_policy"])
def test_a_policy_in_the_environment_wins(var: str) -> None:
    res = subprocess.run(["bash", "-c", 'source "$0"; placement_flags 4 2 ""', str(PLACEMENT)],
                         capture_output=True, text=True, timeout=30, check=True,
                         env={**os.environ, var: "none"})
    assert res.stdout.split() == ["--oversubscribe"]


def test_a_longer_flag_that_only_starts_alike_is_not_a_placement() -> None:
    assert placement_flags(4, 2, "--map-bypass x --bind-tomorrow") == PIN


def _placement_of_local_run(ranks: int, env: dict[str, str]) -> str:
    res = run(["bash", str(ROOT / "launch" / "local.sh"), "-n", str(ranks), "python", "-m",
               "distnet.bench", "--sizes", "8", "--iters", "1", "--algorithms", "native"],
              timeout_s=120, env=env)
    assert not res.timed_out and res.returncode == 0, res.stdout + res.stderr
    return next(ln for ln in res.stdout.splitlines() if ln.startswith("# placement"))


@pytest.mark.skipif(len(os.sched_getaffinity(0)) > 4, reason="twice the cores in ranks: small "
                    "machines only")
def test_local_sh_pins_oversubscribed_ranks_in_blocks() -> None:
    cpus = sorted(os.sched_getaffinity(0))
    host = socket.gethostname()
    pinned = [{"host": host, "cpus": [c]} for c in cpus for _ in range(2)]
    line = _placement_of_local_run(len(pinned), {"MPIRUN_FLAGS": ""})
    assert line == report.placement_line(pinned)  # ranks 0-1 on the first cpu, 2-3 on the next
    unbound = [{"host": host, "cpus": cpus}] * len(pinned)
    assert _placement_of_local_run(len(pinned), {"MPIRUN_FLAGS": "--bind-to none"}) \
        == report.placement_line(unbound)

"""run_group leaves nothing behind: not even a child that moved to a process group of its own,
as Open MPI's launcher does with every rank."""

from __future__ import annotations

import os
import sys
import time

from distnet.common.procgroup import run_group, session_members, stat_fields

# The job starts a sleeper in a new process group and exits at once (the sleeper must not hold
# the job's output pipes, or run_group would wait for it).
ESCAPER = ("import subprocess, sys; "
           "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'], "
           "process_group=0, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
           "print(p.pid, flush=True)")


def _gone(pid: int, within_s: float) -> bool:
    end = time.monotonic() + within_s
    while time.monotonic() < end:
        fields = stat_fields(pid)
        if not fields or fields[0] == b"Z":  # gone, or killed and waiting for init to reap it
            return True
        time.sleep(0.05)
    return False


def test_a_child_in_its_own_process_group_is_killed_with_the_job() -> None:
    done = run_group([sys.executable, "-c", ESCAPER], timeout_s=60)
    assert done.returncode == 0, done.stderr
    pid = int(done.stdout.split()[0])
    try:
        assert _gone(pid, within_s=10), "the escaped child outlived its job"
    finally:
        if not _gone(pid, 0.01):
            os.kill(pid, 9)  # ours: started by the job above


def test_session_members_lists_the_processes_of_a_session() -> None:
    assert os.getpid() in session_members(os.getsid(0))
    assert session_members(2**22 + 12345) == []  # above the kernel's pid_max: no such session


def test_a_job_past_its_timeout_is_killed_and_its_output_kept() -> None:
    t0 = time.monotonic()
    done = run_group([sys.executable, "-c", "print('begun', flush=True); "
                      "import time; time.sleep(60)"], timeout_s=1.0)
    assert done.timed_out and done.returncode == -9
    assert done.stdout == "begun\n"
    assert time.monotonic() - t0 < 30

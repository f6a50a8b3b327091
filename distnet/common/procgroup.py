"""Start `mpirun` jobs from Python without ever hanging: the one home for it.

A crashed rank can leave mpirun (or MPI_Finalize) waiting forever, and ranks can outlive a dead
mpirun. So a job gets its own session, and the whole session is SIGKILLed on timeout and again
once mpirun is done, which also reaps orphaned ranks. The session, not just mpirun's process
group: Open MPI's launcher puts every rank in a process group of its own (seen: ranks left
running for 45 minutes after a killed ULFM job's mpirun, one a minute after an aborted one).
The benchmarks, the restart supervisor and the tests all start their jobs through here.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
# mpirun --with-ft ulfm exits 0 when every rank was killed by a signal (it tolerates failed
# ranks by design), so its status cannot tell a finished run from one where nobody survived.
# A launcher therefore names a marker base in DONE_ENV; a program that supports it (every
# `distnet.common.runner.run` program) touches BASE.started when it starts and BASE.done when a
# rank has finished the whole run. Started but never done, with status 0, is a failure.
DONE_ENV = "DISTNET_DONE_FILE"
EXIT_NOT_FINISHED = 3  # the same status as a fault that stopped the run (the supervisor retries)
# The remote command a launcher starts its daemons with (ssh, or the emulated cluster's agent):
# a launcher that sets it lets the ranks fence a hung rank on another host (distnet.ft.fence).
FENCE_AGENT_ENV = "DISTNET_FENCE_AGENT"
READ_GRACE_S = 10.0  # how long the output is read after the job's session is gone


@dataclass(frozen=True)
class Finished:
    returncode: int
    stdout: str
    stderr: str
    timed_out: bool


def mpirun_prefix(n: int, ft: bool = False) -> list[str]:
    """`mpirun -n N` with this machine's needs: root allowed, oversubscription, optional ULFM."""
    here = str(Path(sys.executable).parent)
    mpirun = shutil.which("mpirun", path=here) or shutil.which("mpirun") or "mpirun"
    cmd = [mpirun, "-n", str(n), "--oversubscribe"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-run-as-root")  # Open MPI refuses root without it
    if "OMPI_MCA_osc" not in os.environ:
        # `python -m mpi4py` starts MPI before distnet can set this default (see distnet/__init__).
        cmd += ["--mca", "osc", "^ucx"]
    if ft:
        # ULFM needs the TCP transport: with shared memory a dead peer hangs the survivors.
        cmd += ["--with-ft", "ulfm", "--mca", "btl", "tcp,self"]
        if "OMPI_MCA_btl_tcp_if_include" not in os.environ:
            # One host: loopback only. Otherwise the TCP transport also binds to whatever other
            # interfaces exist at start-up (an emulated cluster's bridge), and one that vanishes
            # mid-run makes a reconnect after a failure fail and the survivors hang.
            cmd += ["--mca", "btl_tcp_if_include", "127.0.0.1/8"]
    return cmd


def mpirun_python(world: int, *args: str, ft: bool = False) -> list[str]:
    """The command line `mpirun -n world python args...` (this interpreter)."""
    return [*mpirun_prefix(world, ft=ft), sys.executable, *args]


def run_group(cmd: list[str], timeout_s: float | None, env: dict[str, str] | None = None,
              cwd: str | Path | None = None, capture: bool = True) -> Finished:
    """Run `cmd` in a new process group; kill the group on timeout and after it exits.

    With capture=False the job's output goes to this process's stdout/stderr as it comes.
    """
    full_env = dict(os.environ)
    # The children must import this very checkout, wherever they start.
    full_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(PACKAGE_ROOT), full_env.get("PYTHONPATH", "")) if p)
    full_env.update(env or {})
    pipe = subprocess.PIPE if capture else None
    proc = subprocess.Popen(cmd, env=full_env, cwd=cwd, stdout=pipe, stderr=pipe, text=True,
                            start_new_session=True)
    readers = [_Reader(s) for s in (proc.stdout, proc.stderr) if s is not None]
    try:
        timed_out = not _exited(proc.pid, timeout_s)
    finally:
        # Before reaping the leader: until then its pid, the session's id, cannot be reused,
        # so the session killed is ours even when nothing else of it is left.
        kill_group(proc.pid)
        proc.wait()
    out, err = (r.text() for r in readers) if readers else ("", "")
    return Finished(proc.returncode, out, err, timed_out)


def _exited(pid: int, timeout_s: float | None) -> bool:
    """Wait for child pid to exit without reaping it; False if timeout_s passed first."""
    end = None if timeout_s is None else time.monotonic() + timeout_s
    pause = 0.001
    while os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
        if end is not None and time.monotonic() >= end:
            return False
        time.sleep(pause)
        pause = min(2 * pause, 0.05)
    return True


class _Reader:
    """Reads one of a job's output pipes to its end on a thread of its own (so a full pipe
    never stalls the job while run_group waits for it)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._chunks: list[str] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._chunks.append(self._stream.read())
        finally:
            self._stream.close()

    def text(self) -> str:
        # A process outside the job's session (a daemon it started) may hold the pipe open.
        self._thread.join(timeout=READ_GRACE_S)
        return "".join(self._chunks)


def mark(stage: str) -> None:
    """Touch the launcher's `started` or `done` marker, if a launcher asked for one."""
    base = os.environ.get(DONE_ENV)
    if base:
        try:
            with open(f"{base}.{stage}", "a", encoding="ascii"):
                pass
        except OSError:
            pass  # no marker means "not finished": the launcher errs on the safe side


def unfinished(base: str) -> bool:
    """The program behind marker base `base` started and no rank finished the run."""
    return os.path.exists(f"{base}.started") and not os.path.exists(f"{base}.done")


def run_job(cmd: list[str], timeout_s: float | None, env: dict[str, str] | None = None,
            cwd: str | Path | None = None, capture: bool = True) -> Finished:
    """run_group for a distnet program: status 0 without a finished run becomes status 3."""
    with tempfile.TemporaryDirectory(prefix="dn-job-") as folder:
        base = os.path.join(folder, "job")
        done = run_group(cmd, timeout_s, env={**(env or {}), DONE_ENV: base}, cwd=cwd,
                         capture=capture)
        if done.returncode != 0 or done.timed_out or not unfinished(base):
            return done
    note = ("distnet: error: the job exited with status 0 but no rank finished the run "
            f"(every rank died); reporting status {EXIT_NOT_FINISHED}")
    if not capture:
        print(note, file=sys.stderr, flush=True)
    return Finished(EXIT_NOT_FINISHED, done.stdout, done.stderr + note + "\n", False)


def stat_fields(pid: int | str) -> list[bytes]:
    """Fields 3 onwards of /proc/PID/stat (state, ppid, pgrp, session, …, starttime at index
    19); empty if the process is gone or there is no /proc."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return []
    # the command name (field 2) is in parentheses and may hold spaces or parentheses itself
    return stat[stat.rfind(b")") + 2:].split()


def session_members(sid: int) -> list[int]:
    """Pids of the processes in session sid (from /proc; empty where there is none)."""
    try:
        names = os.listdir("/proc")
    except OSError:
        return []
    found = []
    for name in names:
        if name.isdigit():
            fields = stat_fields(name)  # empty: exited meanwhile
            if len(fields) > 3 and int(fields[3]) == sid:
                found.append(int(name))
    return found


def kill_group(pgid: int) -> None:
    """SIGKILL the session a job was started in (its leader's pid is pgid): its own process
    group and every group its launcher made inside the session."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for _ in range(2):  # a rank starting while the first pass runs is caught by the second
        for pid in session_members(pgid):
            if pid != os.getpid():
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass

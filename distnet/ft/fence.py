"""Fencing: make a silent rank really dead, on any host, without splitting the brain.

ULFM's Shrink waits for every live rank, so a rank that is alive but silent (hung, frozen, or
cut off from the data network with its process still running) must be killed before the
survivors can go on. Three questions, one function each:

- who is silent? The arrival notes of the step (deadline.Arrivals) name the ranks that never
  reached the reduction. When every note came, the reduction itself is stuck: a message was
  lost, a rank froze after it arrived, or a cable went down after the notes went through.
  `Probe` then asks every peer again, on a communicator of its own that revocation does not
  touch; only a rank whose process still runs on a connected host answers.
- may this rank fence them? Only a side that hears a strict majority of the members does
  (`may_fence`). A cut-off host hears nobody but itself, so it does not kill the majority
  (no split brain, no second copy training on alone); it ends itself instead, like a crashed
  process. On one host there is no partition, so a silent peer there is simply hung.
- how? Same host: SIGKILL, through a pidfd and only if the pid's start time is still the
  one the rank reported at start-up (a rank that died already may have left its pid to
  another process). Another host: through the launcher's agent, the command Open MPI
  itself starts remote daemons with (ssh, or the emulated cluster's agent), run as
  `AGENT HOST kill -KILL PID` over the management network, which a data-network fault leaves up.
  Without an agent there is no honest way to reach it: the job aborts and is restarted.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import threading
import time
from typing import Any

import numpy as np

from distnet.common.errors import UserError
from distnet.common.procgroup import FENCE_AGENT_ENV, stat_fields

PROBE_TAG = 7011
AGENT_TIMEOUT_S = 20.0
MIN_PROBE_WINDOW_S = 5.0
POLL_S = 0.01


class FenceError(Exception):
    """No way to kill the rank (another host and no agent, or the agent failed)."""


def may_fence(heard: int, members: int) -> bool:
    """A strict majority of the members (this rank included in `heard`) may fence the rest."""
    return 2 * heard > members


def agent() -> list[str] | None:
    """The launcher's remote command (`$DISTNET_FENCE_AGENT`, e.g. `ssh -o BatchMode=yes`).

    UserError when it is set but unusable (unbalanced quotes, an empty or unknown program)."""
    raw = os.environ.get(FENCE_AGENT_ENV, "").strip()
    if not raw:
        return None
    try:
        cmd = shlex.split(raw)
    except ValueError as exc:
        raise UserError(f"${FENCE_AGENT_ENV}: {exc} in {raw[:200]!r}") from None
    if not cmd or not cmd[0] or shutil.which(cmd[0]) is None:
        raise UserError(f"${FENCE_AGENT_ENV}: no such program {cmd[0] if cmd else ''!r}")
    return cmd


def start_ticks(pid: int) -> int | None:
    """When process pid started (clock ticks since boot, /proc/PID/stat field 22); None if it
    is gone or there is no /proc. With the pid it names one process: pids are reused."""
    fields = stat_fields(pid)
    return int(fields[19]) if len(fields) > 19 else None


def _kill_here(pid: int, start: int | None) -> None:
    try:
        fd = os.pidfd_open(pid)  # from here on a reuse of the pid cannot redirect the signal
    except ProcessLookupError:
        return  # died already
    except PermissionError as exc:
        raise FenceError(f"pid {pid}: {exc}") from None
    except OSError:  # no pidfd here (kernel < 5.3, a seccomp filter): check, then plain kill
        fd = None
    try:
        if start is not None and start_ticks(pid) != start:
            return  # the rank died already and another process now holds its pid
        if fd is None:
            os.kill(pid, signal.SIGKILL)
        else:
            signal.pidfd_send_signal(fd, signal.SIGKILL)
    except ProcessLookupError:
        pass
    except PermissionError as exc:
        raise FenceError(f"pid {pid}: {exc}") from None
    finally:
        if fd is not None:
            os.close(fd)


def kill(host: str, pids: list[int], my_host: str,
         starts: list[int | None] | None = None) -> str:
    """SIGKILL pids on host; returns how ("SIGKILL" or "through the agent ..."); FenceError
    if there is no way. `starts` (their `start_ticks` at start-up) guards the same host's
    pids against reuse; the agent's `kill` on another host cannot be guarded that way."""
    if host == my_host:
        for pid, start in zip(pids, starts or [None] * len(pids), strict=True):
            _kill_here(pid, start)
        return "SIGKILL"
    try:
        cmd = agent()
    except UserError as exc:
        raise FenceError(str(exc)) from None
    if cmd is None:
        raise FenceError(f"no launcher agent (${FENCE_AGENT_ENV}) to reach {host}")
    try:
        res = subprocess.run([*cmd, host, "kill", "-KILL", *map(str, pids)], capture_output=True,
                             text=True, timeout=AGENT_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FenceError(f"agent {cmd[0]} on {host}: {exc}") from None
    # kill's "No such process" (status 1): the rank is gone already, which is all we want
    if res.returncode not in (0, 1):
        raise FenceError(f"agent {cmd[0]} on {host} exited {res.returncode}: "
                         f"{res.stderr.strip()[-200:]}")
    return f"through the agent on {host}"


def end_self() -> None:
    """A cut-off minority leaves the way a crashed process does (the runtime tolerates it)."""
    os.kill(os.getpid(), signal.SIGKILL)


class Probe:
    """"Are you there at step s?" notes to every peer, on a private duplicate communicator.

    Every rank whose reduction is stuck sends a note and waits up to a window for the notes of
    the others; a peer counts as heard only with a fresh note for the same step (a note left
    over from an earlier round of that step is used up by that round). One receive per peer
    stays posted between rounds, so a late note is never matched by the wrong round.
    Called from the watchdog thread only (MPI_THREAD_MULTIPLE).
    """

    def __init__(self, comm: Any) -> None:
        self.comm = comm
        self.rank = comm.Get_rank()
        self._recv: dict[int, tuple[Any, np.ndarray]] = {}
        self._last: dict[int, tuple[int, int]] = {}
        self._used: dict[int, tuple[int, int]] = {}
        self._seq = 0
        self._sent: list[tuple[Any, np.ndarray]] = []
        self._lock = threading.Lock()

    def _post(self, peer: int) -> None:
        buf = np.zeros(2, dtype=np.int64)
        self._recv[peer] = (self.comm.Irecv(buf, source=peer, tag=PROBE_TAG), buf)

    def _drain(self, peer: int) -> None:
        req, buf = self._recv[peer]
        try:
            done = req.Test()
        except Exception:  # noqa: BLE001 - a dead peer's request fails: it is silent
            return
        if done:
            self._last[peer] = (int(buf[0]), int(buf[1]))
            self._post(peer)

    def reachable(self, peers: list[int], step: int, window_s: float) -> list[int]:
        """The peers (ranks of the probe communicator) that answered for `step` in the window."""
        with self._lock:
            self._seq += 1
            note = np.array([step, self._seq], dtype=np.int64)
            self._sent = [(r, b) for r, b in self._sent if not _done(r)]
            for p in peers:
                if p not in self._recv:
                    self._post(p)
                try:
                    self._sent.append((self.comm.Isend(note, dest=p, tag=PROBE_TAG), note))
                except Exception:  # noqa: BLE001 - a dead peer: it will not answer
                    pass
            heard: set[int] = set()
            end = time.monotonic() + max(window_s, MIN_PROBE_WINDOW_S)
            while True:
                for p in peers:
                    if p in heard:
                        continue
                    self._drain(p)
                    last = self._last.get(p)
                    if last is not None and last[0] == step and last != self._used.get(p):
                        heard.add(p)
                        self._used[p] = last
                if len(heard) == len(peers) or time.monotonic() >= end:
                    return sorted(heard)
                time.sleep(POLL_S)


def _done(req: Any) -> bool:
    try:
        return bool(req.Test())
    except Exception:  # noqa: BLE001 - failed is done
        return True

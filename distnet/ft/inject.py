"""Injection points: where in a step each planned fault strikes, on the rank it names.

The trainer calls these hooks at fixed points of a step; each fault fires once (except the
multi-step straggler and delay faults). A crash is SIGKILL to oneself: nothing (no finally,
no atexit, no MPI_Finalize) runs, as in a segfault or an OOM kill. (It must be a signal: Open
MPI 5's runtime tolerates ranks killed by signals under --with-ft, but tears the job down once
a second rank exits with a non-zero status.)
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any

from distnet.ft.faultplan import Fault

# how the log names the phase an armed fault strikes in
PHASE = {"allreduce": "reduction", "evaluation": "evaluation"}


class Injector:
    def __init__(self, faults: list[Fault], world_rank: int, attempt: int = 0) -> None:
        now = [f for f in faults if f.attempt == attempt]
        self.world_rank = world_rank
        self.mine = [f for f in now if f.rank == world_rank]
        self.kills = [f for f in now if f.kind == "kill"]
        self.fired: set[Fault] = set()

    def _take(self, kind: str, step: int, at: str = "compute") -> Fault | None:
        for f in self.mine:
            if f.kind == kind and f.at == at and f.step == step and f not in self.fired:
                self.fired.add(f)
                return f
        return None

    def crash(self, fault: Fault) -> None:
        print(f"distnet: injected fault {fault.to_spec()}: world rank {self.world_rank} exits",
              file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

    def before_compute(self, step: int) -> None:
        fault = self._take("crash", step)
        if fault is not None:
            self.crash(fault)
        fault = self._take("hang", step)
        if fault is not None:
            print(f"distnet: injected fault {fault.to_spec()}: world rank {self.world_rank} "
                  "stops responding", file=sys.stderr, flush=True)
            end = time.monotonic() + (fault.seconds or 1e9)
            while time.monotonic() < end:
                time.sleep(0.05)
        for f in self.mine:
            if f.kind == "slow" and f.step <= step < f.step + f.steps:
                time.sleep(f.seconds)

    def wants_nan(self, step: int) -> bool:
        return self._take("nan", step) is not None

    def bitflip_due(self, step: int) -> Fault | None:
        return self._take("bitflip", step)

    def kill_peers(self, step: int, killer_of: dict[int, int], pids: dict[int, tuple[str, int]],
                   host: str) -> None:
        """Kill faults are carried out by another live rank (`killer_of[target]`) on the host."""
        for f in self.kills:
            if f.step != step or f in self.fired or killer_of.get(f.rank) != self.world_rank:
                continue
            self.fired.add(f)
            target_host, pid = pids[f.rank]
            if target_host == host:
                print(f"distnet: injected fault {f.to_spec()}: world rank {self.world_rank} "
                      f"sends SIGKILL to world rank {f.rank} (pid {pid})", file=sys.stderr,
                      flush=True)
                os.kill(pid, signal.SIGKILL)

    def in_recovery(self, step: int) -> None:
        """crash at=recovery fires in the first recovery at or after its step."""
        for f in self.mine:
            if f.kind == "crash" and f.at == "recovery" and step >= f.step:
                self.crash(f)

    def in_evaluation(self, step: int) -> None:
        """hang at=evaluation strikes in the first evaluation at or after its step."""
        for f in self.mine:
            if f.kind == "hang" and f.at == "evaluation" and step >= f.step and f not in self.fired:
                self.fired.add(f)
                self.strike(f)

    def in_allreduce(self, step: int) -> Fault | None:
        """The crash or hang due inside this step's reduction, after the arrival notes."""
        return self._take("crash", step, at="allreduce") or self._take("hang", step, "allreduce")

    def strike(self, fault: Fault) -> None:
        """A fault armed inside the reduction (or an evaluation): crash, or freeze the whole
        process.

        A frozen process (SIGSTOP: no thread runs, its sockets stay open, the runtime sees it
        alive) is what a rank stuck in a driver or swapped out looks like to its peers; unlike
        a sleeping main thread, its watchdog cannot answer for it either.
        """
        if fault.kind == "crash":
            self.crash(fault)
        if fault.seconds:
            # a main thread stuck in user code (a deadlock): the watchdog thread still runs
            print(f"distnet: injected fault {fault.to_spec()}: world rank {self.world_rank} "
                  f"stops inside the {PHASE[fault.at]} for {fault.seconds:g} s", file=sys.stderr,
                  flush=True)
            time.sleep(fault.seconds)
            return
        print(f"distnet: injected fault {fault.to_spec()}: world rank {self.world_rank} "
              f"freezes inside the {PHASE[fault.at]} (SIGSTOP)", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGSTOP)

    def arm_checkpoint_crash(self, step: int) -> Any:
        """crash at=checkpoint: die at the rename that would publish the new checkpoint.

        Returns an undo function. The temporary file is complete but never renamed, which is
        the worst moment for a non-atomic writer and harmless for an atomic one.
        """
        fault = self._take("crash", step, at="checkpoint")
        if fault is None:
            return lambda: None
        real_replace, real_rename = os.replace, os.rename

        def die(*args: Any, **kwargs: Any) -> None:
            self.crash(fault)

        os.replace = die
        os.rename = die

        def undo() -> None:
            os.replace, os.rename = real_replace, real_rename

        return undo

"""A Trainer that survives faults: a step is committed everywhere or redone, never half-applied.

One step, as the fault-tolerant trainer runs it:

    compute gradients  ->  arrival notes (deadline)  ->  reduce gradients + checksum
      ->  Agree(ok) over the live ranks  ->  apply the update  ->  record the step

Any failure before the agreement (a dead peer, a revoked communicator, a laggard, a bad
checksum) leaves the parameters untouched on every rank. With `--ft ulfm` the survivors then
revoke, shrink, rebuild the gradient reducer for the smaller world and redo the step at the
same position of the epoch: the sharding is re-derived for the new world size, so every sample
is still used exactly once. With `--ft none` or `--ft restart` a fault ends the job promptly with
a clear error (the restart supervisor then continues it from the latest checkpoint).
"""

from __future__ import annotations

import json
import math
import os
import socket
import statistics
import sys
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

import numpy as np

from distnet.common.abort import abort_job
from distnet.common.errors import UserError
from distnet.common.runner import AgreedError, abort_all, agree
from distnet.data.shard import global_batch
from distnet.ft import deadline, faultplan, fence, integrity, ulfm
from distnet.ft.faultycomm import FaultyComm, flip_bit
from distnet.ft.inject import Injector
from distnet.training.config import TrainConfig
from distnet.training.metrics import MetricsWriter, read_metrics
from distnet.training.trainer import Trainer

EXIT_FAULT = 3  # a fault stopped the run (the restart supervisor retries; 2 is bad input)

T = TypeVar("T")
MAX_INTEGRITY_REDOS = 2  # --ft ulfm: then the step is skipped (none and restart stop at once)
MAX_RECOVERIES_PER_STEP = 8
ATTEMPT_ENV = "DISTNET_FT_ATTEMPT"  # set by the restart supervisor
JOB_FILE = "ft-job.json"  # in the checkpoint directory: what every restart must keep
# Shrink waits for every live rank: a silent one that escaped fencing would hold it forever.
# Past this limit (or twice the step's deadline, or the longest a fence can take: a probe
# window plus one agent call per other host, and a margin) the job aborts and a restart takes
# over. Ranks that met a failure first may be in the shrink while another still fences.
SHRINK_MIN_LIMIT_S = 30.0
SHRINK_MARGIN_S = 10.0
# A phase outside a step (evaluation, checkpoint, epoch end, final digest) posts no arrival
# notes, so a rank that freezes in it cannot be named and fenced; past its limit the job aborts
# for a restart instead of waiting forever. The limit is far above the phase's expected time:
# PHASE_FACTOR x the longer of its longest run so far and an estimate from the step pace.
PHASE_MIN_LIMIT_S = 30.0
PHASE_FACTOR = 10.0
CHECKPOINT_SLOW_BYTES_PER_S = 20e6  # a slow network disk: what a checkpoint write is priced at
PROBE_MAX_WINDOW_S = 15.0


class IntegrityFailure(Exception):
    pass


class FaultTolerantTrainer(Trainer):
    sync: integrity.CheckedSync
    shares_grad_window = False  # see Trainer: its communicators may shrink
    steps_in_backward = False  # see Trainer: the gradients are checked before the step

    def __init__(self, comm: Any, cfg: TrainConfig, log: Any = print) -> None:
        self.mode = cfg.ft
        self.probe: fence.Probe | None = None
        if self.mode == "ulfm":
            agree(comm, ulfm.check_support)
            agree(comm, fence.agent)  # a malformed $DISTNET_FENCE_AGENT: one line, exit 2
            comm = ulfm.harden(comm)
            # its own duplicate: revoking the training communicators must not silence it
            self.probe = fence.Probe(ulfm.harden(comm))
        if self.mode == "restart" and not cfg.checkpoint_dir:
            raise AgreedError("--ft restart needs --checkpoint-dir "
                              "(the supervisor resumes from it)")
        world = comm.Get_size()
        self.attempt = int(os.environ.get(ATTEMPT_ENV, "0") or 0)
        self.faults = agree(comm, lambda: faultplan.collect(cfg.fault_plan, cfg.inject, world,
                                                       self.attempt))
        super().__init__(comm, cfg, log)
        self.world_rank = self.rank  # a rank's name for the whole run, whatever fails
        # The global batch keeps its size when ranks fail (survivors take bigger parts) and
        # across restarts on other world sizes, so the optimisation is the fault-free one up to
        # summation order.
        self._job_batch = agree(comm, self._job_global_batch)
        self.members = list(range(self.world))  # world rank of each rank of self.comm
        self.host = socket.gethostname()
        ranks = comm.allgather((self.host, os.getpid(), fence.start_ticks(os.getpid())))
        self.pids: dict[int, tuple[str, int]] = {w: (h, pid) for w, (h, pid, _) in
                                                 enumerate(ranks)}
        self.starts: list[int | None] = [start for _, _, start in ranks]  # against pid reuse
        self.injector = Injector(self.faults, self.world_rank, self.attempt)
        self.clock = deadline.DeadlineClock(cfg.deadline_s)
        self.events: list[dict[str, Any]] = []
        self.redone_steps = self.skipped_steps = 0
        self._rank0_log = log
        self._spent: set[faultplan.Fault] = set()
        self._reduce_deadline_s = 0.0
        self._last_samples: dict[str, Any] | None = None
        self._stuck: list[int] | None = None  # laggards named by the last watchdog, if it fired
        self._phase_longest_s: dict[str, float] = {}  # per phase outside a step
        self._phases: list[str] = []  # the ones running now, innermost last (epoch end > eval)
        # The loss of each step is reduced with the checksum, so every rank knows the epoch's
        # total; rank 0 holds it as its share (Progress.epoch_loss_sum) and the others hold 0,
        # so after a shrink the new rank 0 can take the share over without losing a dead rank's.
        self._epoch_loss_total = self.progress.epoch_loss_sum
        self._seat_epoch_loss()
        self._step_rng: dict[str, Any] | None = None
        self._crash: Any = None  # the in-allreduce crash or hang armed for this step, if any
        self._step_ids: list[np.ndarray] | None = None
        self._step_loss = 0.0
        self._rebuild_sync()

    # ---- plumbing ---------------------------------------------------------------------------
    @property
    def global_batch_size(self) -> int:
        return self._job_batch

    def _seat_epoch_loss(self) -> None:
        self.progress.epoch_loss_sum = self._epoch_loss_total if self.rank == 0 else 0.0

    def _job_global_batch(self) -> int:
        """batch_size x world of the job's first run, remembered next to its checkpoints."""
        cfg = self.cfg
        path = os.path.join(cfg.checkpoint_dir, JOB_FILE) if cfg.checkpoint_dir else None
        if path and cfg.resume and os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                try:
                    return int(json.load(f)["global_batch"])
                except (ValueError, KeyError, TypeError):
                    raise UserError(f"{path}: not a distnet job file") from None
        size = cfg.batch_size * self.world
        if path and self.rank == 0 and not cfg.resume:
            os.makedirs(cfg.checkpoint_dir or ".", exist_ok=True)
            tmp = path + ".tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump({"global_batch": size}, f)
            os.replace(tmp, path)
        return size

    def _rebuild_sync(self) -> None:
        cfg = self.cfg
        self.fcomm = FaultyComm(self.comm, [f for f in self.faults if f.rank == self.world_rank
                                            and f.attempt == self.attempt])
        # one-shot network faults stay spent across recoveries, or a drop would repeat forever
        self.fcomm.state.consumed = self._spent
        old = getattr(self, "sync", None)
        self.sync = integrity.CheckedSync(self.fcomm, self.model.grads, self.model.param_slices,
                                          cfg.allreduce, cfg.bucket_mb, cfg.overlap,
                                          self.compression())
        if old is not None:
            # Compressor state survives the rebuild as last committed: the Q matrices agree on
            # every survivor and each keeps its own residual (a dead rank's residual is lost,
            # a bounded error that feedback would have sent later).
            old.abort()
            self.sync.compressor.load_state(old.compressor.shared_state(),
                                            old.compressor.local_state())
        self.watch_sync()

    def _is_fault(self, exc: BaseException) -> bool:
        return self.mode == "ulfm" and (ulfm.is_failure(exc) or isinstance(exc, ulfm.Recovering))

    def _protected(self, phase: str, fn: Callable[[], T], estimate_s: float = 0.0) -> T:
        """Run a collective phase outside a step under its limit (`phase_limit_s`); on a rank
        failure recover (under the shrink's own limit) and run it again.

        A phase inside another (the epoch end's evaluation) runs under the enclosing one's
        limit, and a failure in it repeats the enclosing phase: recovering inside would let
        the outer limit, still running, count the recovery against the phase.
        """
        if self._phases:
            self._phases.append(phase)  # named, should the enclosing limit expire in it
            try:
                return fn()
            finally:
                self._phases.pop()
        for _ in range(MAX_RECOVERIES_PER_STEP):
            limit_s = self.phase_limit_s(phase, estimate_s)
            t0 = time.perf_counter()
            self._phases.append(phase)
            try:
                with deadline.watchdog(limit_s, partial(self._phase_stuck, limit_s)):
                    result = fn()
            except Exception as exc:
                if not self._is_fault(exc):
                    raise
                self._recover(exc, redo=False)
                continue
            finally:
                self._phases.pop()
            took = time.perf_counter() - t0
            self._phase_longest_s[phase] = max(took, self._phase_longest_s.get(phase, 0.0))
            return result
        raise abort_all(f"gave up after {MAX_RECOVERIES_PER_STEP} recoveries in one phase")

    def phase_limit_s(self, phase: str, estimate_s: float = 0.0) -> float:
        """How long `phase` may run before the job aborts (see PHASE_MIN_LIMIT_S)."""
        longest = max(estimate_s, self._phase_longest_s.get(phase, 0.0))
        return max(PHASE_MIN_LIMIT_S, PHASE_FACTOR * longest)

    def _phase_stuck(self, limit_s: float) -> None:
        """Watchdog thread: a phase outside a step outlived its limit (named: the innermost
        running, where the rank is stuck)."""
        from mpi4py import MPI

        phase = self._phases[-1] if self._phases else "phase"
        print(f"distnet: error (world rank {self.world_rank}): the {phase} at step "
              f"{self.progress.step} did not finish within {limit_s:.0f} s (a rank stopped "
              "answering outside a step, where it cannot be fenced): aborting the job for a "
              "restart from the latest checkpoint", file=sys.stderr, flush=True)
        abort_job(MPI.COMM_WORLD, EXIT_FAULT)

    def _evaluation_estimate_s(self) -> float:
        """A forward pass over this rank's share of the validation set, priced at the step
        pace (a step also runs backward, so this overestimates)."""
        if not self.clock.intervals:
            return 0.0
        local_batch = max(1.0, self._job_batch / self.world)
        batches = math.ceil(len(self.data.y_val) / self.world / local_batch)
        return batches * statistics.median(self.clock.intervals)

    def _agree(self, ok: bool) -> bool:
        if self.mode == "ulfm":
            return ulfm.commit_vote(self.comm, ok)
        from mpi4py import MPI

        return bool(self.comm.allreduce(int(ok), op=MPI.MIN))

    def _on_stuck(self, arrivals: deadline.Arrivals | None, reduced: threading.Event) -> None:
        """Watchdog thread: the reduction phase of this step missed its deadline."""
        # This step's communicators and members, taken before the waits below (the notes'
        # grace, the probe): meanwhile a peer's revoke may have led this rank's main thread
        # through a recovery into a new communicator, whose indices mean other ranks.
        comm0, members0, comms = self.comm, list(self.members), self.fcomm.all_comms()
        lag = arrivals.laggards() if arrivals is not None else []
        if lag is None or reduced.is_set() or self.comm is not comm0:
            return  # the step finished just now, or a recovery has already moved on
        lost = [members0[r] for r in lag]
        step, dl = self.progress.step, self._reduce_deadline_s
        if self.mode != "ulfm":
            self._stuck = lost
            who = f"world rank(s) {lost} missed" if lost else "the gradient reduction missed"
            print(f"distnet: error (world rank {self.world_rank}): {who} the {dl:.1f} s "
                  f"deadline at step {step} (--ft {self.mode}): aborting", file=sys.stderr,
                  flush=True)
            abort_job(self.comm, EXIT_FAULT)
        if lost:
            said = f"world rank(s) {lost} never arrived"
        else:
            # Everybody reached the reduction and it is stuck: a lost message, or a rank that
            # froze or was cut off after it arrived. Only the live, connected ones answer.
            lost = self._silent(step, dl, members0)
            if reduced.is_set() or self.comm is not comm0:
                return  # the reduction went through, or a recovery began, while we probed
            said = "every rank arrived; " + (
                f"world rank(s) {lost} did not answer the probe (frozen or cut off)" if lost
                else "all answered the probe (a message was lost)")
        print(f"distnet: world rank {self.world_rank}: step {step} missed the {dl:.1f} s "
              f"deadline; {said}; revoking", file=sys.stderr, flush=True)
        self._stuck = lost  # the cause the recovery will report
        # revoke first: every rank leaves the step's collectives at once and meets the others
        # in the recovery's vote, which then waits only for the fenced ranks to be dead
        self._revoke_all(comms)
        self._fence(lost, members0)

    def _silent(self, step: int, deadline_s: float, members: list[int]) -> list[int]:
        """World ranks of the members that do not answer a probe (watchdog thread)."""
        if self.probe is None:
            return []
        peers = [m for m in members if m != self.world_rank]
        heard = self.probe.reachable(peers, step, min(deadline_s, PROBE_MAX_WINDOW_S))
        return [m for m in peers if m not in heard]

    def _revoke_all(self, comms: list[Any] | None = None) -> None:
        """Revoke self.comm and the reducer's duplicates of it (FaultyComm tracks them all)."""
        for c in self.fcomm.all_comms() if comms is None else comms:
            ulfm.revoke(c)

    def _killers(self) -> dict[int, int]:
        """Who carries out a kill fault: the first other live rank."""
        return {t: next((m for m in self.members if m != t), -1) for t in self.members}

    # ---- one step ---------------------------------------------------------------------------
    def train_step(self, perm: np.ndarray) -> int:
        redos = 0
        for _ in range(MAX_RECOVERIES_PER_STEP + MAX_INTEGRITY_REDOS + 1):
            try:
                return self._attempt(perm)
            except IntegrityFailure as exc:
                self.sync.abort()
                redos += 1
                self.redone_steps += 1
                if self.mode != "ulfm":
                    # Agreed by every rank; not bad input, so a supervisor restarts it.
                    raise AgreedError(f"step {self.progress.step}: {exc} (--ft {self.mode}): "
                                      "stopping before the model is poisoned",
                                      status=EXIT_FAULT) from None
                if redos > MAX_INTEGRITY_REDOS:
                    return self._skip_step(perm, str(exc))
                self._note({"event": "integrity", "step": self.progress.step,
                            "reason": str(exc), "action": "redo", "world_size": self.world})
                self.log(f"integrity: step {self.progress.step}: {exc} (agreed by every rank); "
                         "redoing the step")
            except Exception as exc:
                if not self._is_fault(exc):
                    raise
                self._recover(exc, redo=True)
        raise abort_all(f"step {self.progress.step}: gave up after repeated failures")

    # The base step's phases, extended: faults are injected before compute, the reduction runs
    # under a deadline with a checksum and ends in an agreement, so a step is committed on
    # every rank or on none (then IntegrityFailure or a ULFM error makes train_step redo it).
    def _attempt(self, perm: np.ndarray) -> int:
        return super().train_step(perm)

    def before_compute(self, idx: np.ndarray) -> None:
        step, inj = self.progress.step, self.injector
        inj.kill_peers(step, self._killers(), self.pids, self.host)
        inj.before_compute(step)
        self._step_rng = self.model.get_rng_state()
        checked = self.sync
        checked.begin()
        checked.poison_next = inj.wants_nan(step)
        self._crash = inj.in_allreduce(step)
        crash = self._crash

        def strike() -> None:
            self._crash = None  # fired (a hang that ends must not fire again below)
            inj.strike(crash)

        self.fcomm.begin_step(step, strike if crash else None)

    def reduce_grads(self, loss: float, idx: np.ndarray) -> float:
        step, inj, checked = self.progress.step, self.injector, self.sync
        if checked.poison_next:  # no sample here, so no backward: poison the zero gradient
            self.model.grads[0] = np.nan
            checked.poison_next = False
        self._reduce_deadline_s = self.clock.deadline_s()
        arrivals = deadline.Arrivals(self.comm, step) if self.world > 1 else None
        reduced = threading.Event()
        with deadline.watchdog(self._reduce_deadline_s,
                               lambda: self._on_stuck(arrivals, reduced)):
            checked.finish()
            if self._crash is not None:  # a reduction without messages (one rank) dies here
                inj.strike(self._crash)
            flip = inj.bitflip_due(step)
            if flip is not None and flip not in self.fcomm.state.consumed:
                flip_bit(self.model.grads, seed=step)  # the algorithm used no hookable call
            stats = np.array([loss, checked.local_sum, checked.local_abs], dtype=np.float64)
            if self.world > 1:
                from mpi4py import MPI

                self.comm.Allreduce(MPI.IN_PLACE, stats, op=MPI.SUM)
            reason = checked.check(stats[1], stats[2], self.world)
            self._step_ids = self.comm.gather(idx, root=0) if self.cfg.track_samples else None
            ok = self._agree(reason is None)
            reduced.set()
            if arrivals is not None:
                # if the watchdog fired at the very last moment, the agreement still stands
                # (it is the same everywhere); the revoked communicator fails the next step
                arrivals.finish()
        if not ok:
            if self._step_rng is not None:
                self.model.set_rng_state(self._step_rng)  # the redo draws the same masks
            raise IntegrityFailure(f"gradient {reason or 'checksum (on another rank)'}")
        self._step_loss = float(stats[0])
        return self._step_loss if self.rank == 0 else 0.0

    def after_commit(self, batch: np.ndarray, idx: np.ndarray) -> None:
        pr = self.progress
        self._epoch_loss_total += self._step_loss
        if self.cfg.track_samples:
            # every rank remembers the committed batch: if rank 0 dies before writing it down,
            # its successor does (see _recover)
            self._last_samples = {"event": "samples", "epoch": pr.epoch, "step": pr.step - 1,
                                  "pos": pr.pos - len(batch), "world_size": self.world,
                                  "attempt": self.attempt, "ids": [int(i) for i in batch]}
            if self._step_ids is not None:
                self._last_samples["ids"] = [int(i) for part in self._step_ids for i in part]
                self.metrics.write(self._last_samples)
        self.clock.tick()

    def _skip_step(self, perm: np.ndarray, reason: str) -> int:
        """The same step failed its checks again and again: drop it, keep the model clean."""
        pr = self.progress
        batch = global_batch(perm, pr.pos, self.global_batch_size, 1)
        self.skipped_steps += 1
        self._note({"event": "integrity", "step": pr.step, "reason": reason, "action": "skip",
                    "skipped_ids": [int(i) for i in batch], "world_size": self.world})
        pr.pos += len(batch)
        pr.step += 1
        return len(batch)

    # ---- recovery ---------------------------------------------------------------------------
    def _recover(self, exc: BaseException, redo: bool) -> None:
        """Revoke, shrink, rebuild; the caller then redoes what failed."""
        t0 = time.perf_counter()
        step = self.progress.step
        cause, waited_s = "process failure", 0.0
        if self._stuck is not None:
            cause = "deadline" if self._stuck else "reduction deadline"
            waited_s, self._stuck = self._reduce_deadline_s, None
        self._revoke_all()
        old_world, was_rank0 = self.world, self.rank == 0
        other_hosts = len({host for host, _ in self.pids.values()} - {self.host})
        fence_s = PROBE_MAX_WINDOW_S + other_hosts * fence.AGENT_TIMEOUT_S + SHRINK_MARGIN_S
        limit_s = max(SHRINK_MIN_LIMIT_S, 2 * self._reduce_deadline_s, fence_s)
        with deadline.watchdog(limit_s, lambda: self._shrink_stuck(step, limit_s)):
            if not isinstance(exc, ulfm.Recovering):
                ulfm.join_recovery(self.comm)  # ... whose commit vote told the others already
            self.injector.in_recovery(step)
            self.comm, self.members, failed = ulfm.shrink(self.comm, self.members)
        self.rank, self.world = self.comm.Get_rank(), self.comm.Get_size()
        self._rebuild_sync()
        # Only the ranks whose own watchdog fired know why; rank 0 writes the record.
        causes = ("process failure", "reduction deadline", "deadline")
        why = np.array([waited_s, causes.index(cause)], dtype=np.float64)
        try:
            from mpi4py import MPI

            self.comm.Allreduce(MPI.IN_PLACE, why, op=MPI.MAX)
        except Exception as err:
            if not ulfm.is_failure(err):
                raise
            # another rank failed already: the redo will notice it and recover again
        waited_s, cause = float(why[0]), causes[int(why[1])]
        if cause == "deadline" and not failed:
            cause = "reduction deadline"
        if self.rank == 0 and not was_rank0:
            # the old rank 0 died: this rank takes over the log and the (shared) metrics file
            self.metrics = MetricsWriter(self.cfg.metrics, append=True)
            if not self.cfg.quiet:
                self.log = self._rank0_log
            self._rewrite_last_samples()
        self._seat_epoch_loss()
        self.clock.relax()
        if redo:
            self.redone_steps += 1
        recovery_s = time.perf_counter() - t0
        self._note({"event": "recovery", "cause": cause, "failed_ranks": failed, "step": step,
                    "epoch": self.progress.epoch, "pos": self.progress.pos,
                    "recovery_s": recovery_s, "redone_steps": int(redo),
                    "world_size": self.world, "old_world_size": old_world,
                    "waited_s": waited_s})
        self.log(f"recovery: lost world rank(s) {failed} ({cause}) at step {step}, epoch "
                 f"{self.progress.epoch + 1}, position {self.progress.pos}; world "
                 f"{old_world} -> {self.world}; recovered in {recovery_s * 1e3:.1f} ms; "
                 f"{'redoing the step' if redo else 'repeating the phase'}")

    def _shrink_stuck(self, step: int, limit_s: float) -> None:
        """Watchdog thread: the shrink outlived its limit (a live rank never joined it)."""
        from mpi4py import MPI

        print(f"distnet: error (world rank {self.world_rank}): the shrink after step {step} "
              f"did not finish within {limit_s:.0f} s (a live rank never joined it): aborting "
              "the job for a restart from the latest checkpoint", file=sys.stderr, flush=True)
        abort_job(MPI.COMM_WORLD, EXIT_FAULT)

    def _fence(self, world_ranks: list[int], members: list[int]) -> None:
        """Make silent ranks really dead, so that Shrink (which waits for live ranks) can drop
        them; a side without a majority ends itself instead (see distnet.ft.fence)."""
        if not world_ranks:
            return
        heard = len(members) - len(world_ranks)
        remote = any(self.pids[w][0] != self.host for w in world_ranks)
        if remote and 2 * heard == len(members):
            # Neither side may go on, and ending only this side could leave the other one
            # (hung, not cut off) waiting forever: the job ends for a restart.
            print(f"distnet: error (world rank {self.world_rank}): heard {heard} of "
                  f"{len(members)} ranks, no majority on either side: aborting the job for a "
                  "restart from the latest checkpoint", file=sys.stderr, flush=True)
            from mpi4py import MPI

            abort_job(MPI.COMM_WORLD, EXIT_FAULT)
        if remote and not fence.may_fence(heard, len(members)):
            print(f"distnet: world rank {self.world_rank} on {self.host}: cut off (heard "
                  f"{heard} of {len(members)} ranks, no majority): ending this rank; the "
                  "majority fences the silent side and goes on", file=sys.stderr, flush=True)
            fence.end_self()
        by_host: dict[str, list[int]] = {}
        for w in world_ranks:
            by_host.setdefault(self.pids[w][0], []).append(w)
        for host, ranks in by_host.items():  # one agent call per host
            pids = [self.pids[w][1] for w in ranks]
            try:
                how = fence.kill(host, pids, self.host, [self.starts[w] for w in ranks])
            except fence.FenceError as exc:
                print(f"distnet: error: world rank(s) {ranks} on {host} are hung and cannot be "
                      f"fenced from {self.host} ({exc}): aborting the job", file=sys.stderr,
                      flush=True)
                from mpi4py import MPI

                abort_job(MPI.COMM_WORLD, EXIT_FAULT)
            for w, pid in zip(ranks, pids, strict=True):
                print(f"distnet: world rank {self.world_rank}: fencing world rank {w} "
                      f"(SIGKILL pid {pid}{'' if how == 'SIGKILL' else ', ' + how})",
                      file=sys.stderr, flush=True)

    def _rewrite_last_samples(self) -> None:
        """The dead rank 0 may have committed a step without recording its samples."""
        last = self._last_samples
        if last is None or not self.cfg.metrics or not os.path.exists(self.cfg.metrics):
            return
        try:
            records = read_metrics(self.cfg.metrics)
        except ValueError:  # a line cut short by the death: rewrite rather than lose a step
            records = []
        seen = any(r.get("event") == "samples" and r.get("step") == last["step"]
                   and r.get("attempt") == last["attempt"] for r in records)
        if not seen:
            self.metrics.write({**last, "written_by_successor": True})

    def _note(self, record: dict[str, Any]) -> None:
        self.events.append(record)
        self.metrics.write(record)
        self.observer.instant(record.get("event", "event"), "recovery",
                              {k: v for k, v in record.items() if k != "event"})

    # ---- phases outside a step --------------------------------------------------------------
    def evaluate(self) -> tuple[float, float]:
        def run() -> tuple[float, float]:
            self.injector.in_evaluation(self.progress.step)
            return super(FaultTolerantTrainer, self).evaluate()

        return self._protected("evaluation", run, self._evaluation_estimate_s())

    def _end_epoch(self, wall_s: float) -> dict[str, Any]:
        record = self._protected(  # it holds an evaluation, so its limit covers one
            "epoch end", lambda: super(FaultTolerantTrainer, self)._end_epoch(wall_s),
            self._evaluation_estimate_s())
        self._epoch_loss_total = 0.0
        self.clock.relax()
        return record

    def save_checkpoint(self) -> None:
        undo = self.injector.arm_checkpoint_crash(self.progress.step)
        try:
            self._protected("checkpoint", self._save_and_wait, self._checkpoint_estimate_s())
        finally:
            undo()
        self.clock.relax()

    def _save_and_wait(self) -> None:
        super().save_checkpoint()
        # Everyone waits for rank 0's write here, under the phase's limit; going on instead,
        # the peers would hold a long write to the next step's deadline and fence rank 0.
        self.comm.Barrier()

    def _checkpoint_estimate_s(self) -> float:
        """Parameters and up to two optimiser moments per parameter, at a slow disk's pace."""
        return 3 * self.model.params.nbytes / CHECKPOINT_SLOW_BYTES_PER_S

    def fit(self) -> dict[str, Any]:
        summary = super().fit()
        digest = integrity.param_digest(self.model.params)
        digests = self._protected("final digest", lambda: self.comm.allgather(digest))
        recoveries = [e for e in self.events if e["event"] == "recovery"]
        record = {
            "event": "ft_done", "mode": self.mode, "world_size": self.world,
            "members": self.members, "param_digests": digests,
            "params_identical": len(set(digests)) == 1, "recoveries": len(recoveries),
            "failed_ranks": sorted({r for e in recoveries for r in e["failed_ranks"]}),
            "redone_steps": self.redone_steps, "skipped_steps": self.skipped_steps,
            "recovery_s": sum(e["recovery_s"] for e in recoveries), "attempt": self.attempt,
            "val_loss": summary["val_loss"], "steps": summary["steps"],
        }
        if self.rank == 0:
            writer = MetricsWriter(self.cfg.metrics, append=True)
            writer.write(record)
            writer.close()
        if recoveries:
            # After a failure MPI_Finalize can wait forever for the dead ranks; everything is
            # written and flushed, so leave without it (telling the launcher the run finished).
            from distnet.common.procgroup import mark

            mark("done")
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
        return summary

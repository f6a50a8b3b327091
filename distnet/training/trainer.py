"""The data-parallel training loop.

Each step every rank takes its part of the same global batch, computes gradients of
(sum of its sample losses) / (global batch size), and the ranks SUM those gradients: the result is
exactly the 1-rank gradient of the whole global batch, even for a short last batch where some
ranks hold no sample at all. Parameters start identical (same seed) and receive identical updates,
so they stay identical on every rank without ever being broadcast.

Progress is a position in the epoch's global permutation (`pos`), not a step count: resuming from
a checkpoint, or continuing with a different number of ranks, re-derives the sharding of what is
left of the epoch, so every sample is used exactly once per epoch.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from distnet.common.errors import UserError
from distnet.common.progress import bar as progress_bar
from distnet.common.runner import AgreedError, agree
from distnet.data.dataset import Dataset, fingerprint
from distnet.data.shard import epoch_permutation, global_batch, rank_part, steps_per_epoch
from distnet.nn.layers import SGDUpdate
from distnet.nn.losses import softmax_cross_entropy
from distnet.nn.optim import lr_at
from distnet.observe.observer import Observer
from distnet.training import checkpoint
from distnet.training.breakdown import breakdown, format_breakdown
from distnet.training.config import TrainConfig
from distnet.training.gradsync import (
    Compression,
    GradSync,
    release_grad_buffer,
    shared_grad_buffer,
)
from distnet.training.metrics import MetricsWriter, read_metrics
from distnet.training.prepare import (
    Prepared,
    build_model,
    build_optimizer,
    model_spec,
    prepare_data,
)

EVAL_CHUNK = 4096


@dataclass
class Progress:
    """Where the run is; everything here goes into a checkpoint."""

    epoch: int = 0
    pos: int = 0  # samples of this epoch's permutation already consumed
    step: int = 0  # optimiser steps since the start of the run
    best_val_loss: float = float("inf")
    bad_epochs: int = 0
    # This rank's share of the epoch's summed batch losses: the shares of all ranks add up to
    # the sum over the epoch's steps of each global batch's mean loss (summed at epoch end).
    epoch_loss_sum: float = 0.0
    epoch_steps: int = 0


@dataclass
class Timers:
    forward_s: float = 0.0
    backward_s: float = 0.0
    optim_s: float = 0.0
    comm_s: float = 0.0
    samples: int = 0

    def reset(self) -> None:
        self.forward_s = self.backward_s = self.optim_s = self.comm_s = 0.0
        self.samples = 0

    @property
    def compute_s(self) -> float:
        return self.forward_s + self.backward_s + self.optim_s


class Trainer:
    def __init__(self, comm: Any, cfg: TrainConfig, log: Any = print) -> None:
        self.comm, self.cfg = comm, cfg
        self.rank, self.world = comm.Get_rank(), comm.Get_size()
        self.log = log if self.rank == 0 and not cfg.quiet else (lambda *a, **k: None)
        self.data: Prepared = agree(comm, lambda: prepare_data(cfg))
        self._check_same_data()
        n_train = len(self.data.y_train)
        if n_train < self.world:  # decided on agreed data: every rank raises it
            raise AgreedError(f"more ranks ({self.world}) than training samples ({n_train})")
        n_in = self.data.x_train.shape[1]
        self.spec = model_spec(cfg, n_in, self.data.n_classes)
        self.model = agree(comm, lambda: build_model(cfg, self.spec["n_in"], self.spec["n_out"],
                                                     self.rank))
        # Collective, so not inside `agree`; before the optimiser, which holds the gradients.
        self._grad_window = self._share_grads()
        self.opt = agree(comm, lambda: build_optimizer(cfg, self.model))
        # Not inside `agree`: GradSync runs collectives (Dup); config already checked the name.
        self.sync = GradSync(comm, self.model.grads, self.model.param_slices, cfg.allreduce,
                             cfg.bucket_mb, cfg.overlap, self.compression())
        self.progress = Progress()
        self._stepped_in_backward = False
        self._saved_step = -1
        self.timers = Timers()
        self.metrics = agree(comm, self._open_outputs)
        self.observer = self._build_observer()
        self.watch_sync()
        if cfg.resume:
            agree(comm, self._resume)

    def _build_observer(self) -> Observer:
        """Trace, straggler blame and stall notes (collective: clock ping-pong, a Dup).

        Stall notes are left to ULFM's own deadlines under --ft ulfm: a dead rank would never
        send its last note."""
        cfg = self.cfg
        obs = Observer(self.comm, trace_path=cfg.trace, trace_plot=cfg.trace_plot,
                       trace_detail=cfg.trace_detail, trace_steps=cfg.trace_steps,
                       stall_warn_s=0.0 if cfg.ft == "ulfm" else cfg.stall_warn_s,
                       meta={"program": "distnet.train", "allreduce": cfg.allreduce,
                             "bucket_mb": cfg.bucket_mb, "overlap": cfg.overlap})
        if obs.traces_layers:
            self.model.recorder = obs
        return obs

    def watch_sync(self) -> None:
        """Tell the observer about every reduction of self.sync (again after a rebuild)."""
        self.sync.observe(self.observer)

    def _check_same_data(self) -> None:
        """A stale copy of the data file on one node would make ranks run different step counts
        (a hang) or silently mix datasets: compare a digest of the training split."""
        d = self.data
        digest = fingerprint(Dataset(d.x_train, d.y_train, d.n_classes))
        digests = self.comm.allgather(digest) if self.world > 1 else [digest]
        if len(set(digests)) > 1:
            odd = [r for r, h in enumerate(digests) if h != digests[0]]
            raise AgreedError(f"ranks {odd} loaded different data than rank 0 "
                              "(is the data file the same on every node?)")

    def _open_outputs(self) -> MetricsWriter:
        """Check every output location before training, so no result is lost at the end."""
        cfg = self.cfg
        if self.rank == 0:
            for flag, path in (("--save", cfg.save), ("--metrics", cfg.metrics),
                               ("--trace", cfg.trace), ("--trace-plot", cfg.trace_plot),
                               ("--checkpoint-dir", cfg.checkpoint_dir)):
                if path:
                    if flag != "--checkpoint-dir" and os.path.isdir(path):
                        raise UserError(f"{flag} {path}: is a directory, expected a file name")
                    folder = path if flag == "--checkpoint-dir" else os.path.dirname(path) or "."
                    try:
                        os.makedirs(folder, exist_ok=True)
                    except OSError as exc:
                        raise UserError(f"{flag} {path}: cannot create {folder}: "
                                        f"{exc.strerror}") from None
                    if not os.access(folder, os.W_OK):
                        raise UserError(f"{flag} {path}: {folder} is not writable")
        return MetricsWriter(cfg.metrics if self.rank == 0 else None, append=cfg.resume)

    # A fault-tolerant trainer reduces on communicators that shrink: a window made with a rank
    # that then died could neither be reduced in place nor freed (its free is collective).
    shares_grad_window = True

    def _share_grads(self) -> np.ndarray | None:
        """Put the gradients in shm's shared window when shm reduces them (distnet/allreduce/
        shm.py, zero copy), else leave them where they are; None then."""
        cfg = self.cfg
        if not self.shares_grad_window or cfg.compress != "none":
            return None  # a compressor reduces its own encoding, never the gradients in place
        buf = shared_grad_buffer(self.comm, self.model.grads.shape[0], self.model.dtype,
                                 cfg.allreduce, cfg.bucket_mb)
        if buf is not None:
            self.model.use_grad_buffer(buf)
        return buf

    def _unshare_grads(self) -> None:
        """Move the gradients back into private memory and free the window (collective)."""
        window = self._grad_window
        if window is None:
            return
        self._grad_window = None
        self.model.use_grad_buffer(window.copy())
        self.opt.grads = self.model.grads  # nothing may keep a view of the freed window
        self.sync.grads = self.model.grads
        release_grad_buffer(window)

    # A fault-tolerant trainer checksums the reduced gradients (and injects faults into them)
    # before it applies them: they must exist.
    steps_in_backward = True

    def _update_in_backward(self) -> SGDUpdate | None:
        """The optimiser step to take inside backward when nobody needs the gradients: one rank,
        no compressor (it keeps state on one rank too), an optimiser that can (plain SGD)."""
        if not self.steps_in_backward or self.world > 1 or self.cfg.compress != "none":
            return None
        update: SGDUpdate | None = self.opt.update_in_backward()
        return update

    # ---- one step ----------------------------------------------------------------------------
    @property
    def global_batch_size(self) -> int:
        """Samples per optimiser step over all ranks (fault tolerance keeps it fixed)."""
        return self.cfg.batch_size * self.world

    def train_step(self, perm: np.ndarray) -> int:
        """One optimiser step on the global batch at the current position; returns its size.

        Three phases, each a method a subclass extends (ft/resilient.py adds fault injection,
        deadlines, checksums and an agreement without re-writing the step):
          compute -- this rank's share of the global batch: forward, loss, backward (with
                     bucketing, backward already starts the reductions of finished buckets);
          reduce  -- the gradients are summed over all ranks;
          commit  -- the optimiser applies the update and the step is recorded.
        """
        batch = global_batch(perm, self.progress.pos, self.global_batch_size, 1)
        idx = rank_part(batch, self.rank, self.world)
        obs = self.observer
        obs.begin_step(self.progress.step)
        with obs.span("step", "step", {"step": self.progress.step}):
            # compute
            self.before_compute(idx)
            loss, forward_s, backward_s = self.compute_grads(idx, len(batch))
            # reduce
            t0 = time.perf_counter()
            loss_share = self.reduce_grads(loss, idx)
            t1 = time.perf_counter()
            obs.reduced(t1 - t0)
            # commit
            with obs.span("optimizer", "optim"):
                self.apply_update()
            t2 = time.perf_counter()
            self.record_step(len(idx), len(batch), loss_share, forward_s, backward_s, t1 - t0,
                             t2 - t1)
            self.after_commit(batch, idx)
        return len(batch)

    def before_compute(self, idx: np.ndarray) -> None:
        """Hook: runs before the step's forward pass."""

    def after_commit(self, batch: np.ndarray, idx: np.ndarray) -> None:
        """Hook: runs once the step is applied and recorded."""

    def compute_grads(self, idx: np.ndarray, global_count: int) -> tuple[float, float, float]:
        """Gradients of (sum of this rank's sample losses) / global_count.

        Returns that loss and the forward and backward seconds. With bucketing, backward also
        starts the reductions of finished buckets through the sync hook. When nobody needs the
        gradients (`_update_in_backward`), backward takes the optimiser step itself instead,
        one GEMM per weight, and `apply_update` has nothing left to do.
        """
        model = self.model
        t0 = time.perf_counter()
        self._stepped_in_backward = False
        update = self._update_in_backward()
        if update is None or not len(idx):
            # a step inside backward leaves the gradients alone; without a backward (no
            # samples here), apply_update's opt.step() must find zeros, not an old step's
            model.zero_grad()
        if not len(idx):
            return 0.0, time.perf_counter() - t0, 0.0
        xb, yb = self.data.x_train[idx], self.data.y_train[idx]
        with self.observer.span("forward", "phase"):
            out = model.forward(xb, train=True)
            loss, dout = softmax_cross_entropy(out, yb, denom=global_count)
        t1 = time.perf_counter()
        with self.observer.span("backward", "phase"):
            if update is None:
                model.backward(dout, hook=self.sync.hook)
            else:
                model.backward(dout, update=update)
                self._stepped_in_backward = True
        return float(loss), t1 - t0, time.perf_counter() - t1

    def reduce_grads(self, loss: float, idx: np.ndarray) -> float:
        """Sum the gradients over all ranks. Returns this rank's share of the step's loss:
        shares add up over ranks to the global batch's mean loss (see Progress)."""
        self.sync.finish()
        return loss

    def apply_update(self) -> None:
        if not self._stepped_in_backward:
            self.opt.step()
        self.sync.commit()  # the compressor's state (error feedback, Q) moves on with the step

    def compression(self) -> Compression:
        """The --compress settings for a GradSync over this model."""
        from distnet.compress import tensors_of

        cfg = self.cfg
        return Compression(cfg.compress, tuple(tensors_of(self.model)), {
            "rank": cfg.powersgd_rank, "start_step": cfg.powersgd_start_step, "seed": cfg.seed})

    def record_step(self, local_count: int, global_count: int, loss_share: float, forward_s: float,
                    backward_s: float, comm_s: float, optim_s: float) -> None:
        t, pr = self.timers, self.progress
        t.forward_s += forward_s
        t.backward_s += backward_s
        t.comm_s += comm_s
        t.optim_s += optim_s
        t.samples += global_count
        pr.epoch_loss_sum += loss_share
        pr.epoch_steps += 1
        pr.pos += global_count
        pr.step += 1
        if self.cfg.profile:
            self.metrics.write({
                "event": "step", "epoch": pr.epoch, "step": pr.step, "forward_s": forward_s,
                "backward_s": backward_s, "allreduce_s": comm_s, "optim_s": optim_s,
                "bytes": self.sync.nbytes, "algorithm": self.cfg.allreduce,
                "compress": self.cfg.compress, "wire_stages": self.sync.wire_stages(),
                "wire_bytes": sum(self.sync.wire_stages()),
                "compress_s": self.sync.compressor.take_compute_s(),
                "samples": global_count, "local_samples": local_count, "world_size": self.world,
            })

    # ---- the loop ---------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        cfg, pr = self.cfg, self.progress
        n = len(self.data.y_train)
        start = time.perf_counter()
        self.log(f"distnet: {self.world} rank(s), {n} train / {len(self.data.y_val)} val samples, "
                 f"model {self.spec['n_in']}-{'-'.join(map(str, self.spec['hidden']))}"
                 f"-{self.spec['n_out']} ({self.model.params.size:,} parameters, {cfg.dtype}), "
                 f"all-reduce {cfg.allreduce}, {steps_per_epoch(n, cfg.batch_size, self.world)} "
                 f"steps/epoch")
        every = cfg.checkpoint_every if cfg.checkpoint_dir else 0
        while pr.epoch < cfg.epochs and not self._step_cap_reached() and not self._patience_out():
            self.opt.lr = lr_at(cfg.lr_schedule, cfg.lr, pr.epoch, cfg.epochs)
            epoch_start = time.perf_counter()
            self.timers.reset()
            perm = epoch_permutation(n, cfg.seed, pr.epoch)
            bar = self._epoch_bar(n)
            while pr.pos < n and not self._step_cap_reached():
                self.train_step(perm)
                bar.update()
                # An epoch's last step is saved after its bookkeeping, below, so a resumed run
                # does not redo (and re-record) the end of that epoch.
                if every and pr.step % every == 0 and pr.pos < n:
                    self.save_checkpoint()
            bar.close()
            if pr.pos < n:
                break  # step cap reached mid-epoch: no epoch record for a partial epoch
            self._end_epoch(time.perf_counter() - epoch_start)
            if cfg.checkpoint_dir and (not every or pr.step % every == 0):
                self.save_checkpoint()
            if self._patience_out():
                self.log(f"early stopping: val_loss has not improved for {pr.bad_epochs} epochs "
                         f"(best {pr.best_val_loss:.4f})")
                break
        if cfg.checkpoint_dir and self._saved_step != pr.step:
            self.save_checkpoint()  # the run's end (step cap, early stop) is always resumable
        val_loss, val_acc = self.evaluate()
        blame = self.observer.finish(self.comm)
        if blame is not None:
            self.metrics.write(blame)
            self.log(blame["line"])
            if "network" in blame:
                self.log(blame["network"]["line"])
        summary = {
            "event": "done", "world_size": self.world, "epochs_run": pr.epoch, "steps": pr.step,
            "val_loss": val_loss, "val_acc": val_acc, "wall_s": time.perf_counter() - start,
            "stopped_early": self._patience_out(), "algorithm": cfg.allreduce,
            "param_count": int(self.model.params.size), "grad_bytes": self.sync.nbytes,
            "compress": cfg.compress, "wire_bytes": sum(self.sync.wire_stages()),
        }
        self.metrics.write(summary)
        self.log(f"done: {pr.epoch} epoch(s), {pr.step} steps, val_loss {val_loss:.4f}, "
                 f"val_acc {100 * val_acc:.2f}% in {summary['wall_s']:.1f}s "
                 f"on {self.world} rank(s)")
        if cfg.save:
            self.save_params(cfg.save)
        self.metrics.close()
        self.sync.close()
        self._unshare_grads()
        if cfg.profile and cfg.metrics and self.rank == 0:
            self.log(format_breakdown(breakdown(read_metrics(cfg.metrics))))
        return summary

    def _epoch_bar(self, n: int) -> Any:
        """A progress bar over this epoch's steps (rank 0, on a terminal, not --quiet)."""
        per_step = self.global_batch_size
        b = progress_bar(-(-n // per_step), f"epoch {self.progress.epoch + 1}/{self.cfg.epochs}",
                         rank=1 if self.cfg.quiet else self.rank, unit="step")
        b.update(self.progress.pos // per_step)
        return b

    def _patience_out(self) -> bool:
        """Early stopping: val_loss has not improved for --early-stopping epochs (also when a
        resumed run's checkpoint already says so)."""
        return bool(self.cfg.early_stopping) and self.progress.bad_epochs >= self.cfg.early_stopping

    def _step_cap_reached(self) -> bool:
        return bool(self.cfg.max_steps) and self.progress.step >= self.cfg.max_steps

    def _end_epoch(self, wall_s: float) -> dict[str, Any]:
        pr, t = self.progress, self.timers
        # Summed over ranks, the per-rank shares add up to each global batch's mean loss.
        totals = np.array([pr.epoch_loss_sum, t.compute_s, t.comm_s], dtype=np.float64)
        from mpi4py import MPI

        self.comm.Allreduce(MPI.IN_PLACE, totals, op=MPI.SUM)
        train_loss = totals[0] / max(pr.epoch_steps, 1)
        val_loss, val_acc = self.evaluate()
        record = {
            "event": "epoch", "epoch": pr.epoch + 1, "step": pr.step, "train_loss": train_loss,
            "val_loss": val_loss, "val_acc": val_acc, "samples_per_s": t.samples / wall_s,
            "compute_s": totals[1] / self.world, "comm_s": totals[2] / self.world,
            "wall_s": wall_s, "lr": self.opt.lr, "world_size": self.world,
        }
        self.metrics.write(record)
        self.log(f"epoch {pr.epoch + 1}/{self.cfg.epochs}  train_loss {train_loss:.4f}  "
                 f"val_loss {val_loss:.4f}  val_acc {100 * val_acc:6.2f}%  "
                 f"{record['samples_per_s']:,.0f} samples/s  (compute {record['compute_s']:.2f}s,"
                 f" comm {record['comm_s']:.2f}s)")
        if val_loss < pr.best_val_loss:
            pr.best_val_loss, pr.bad_epochs = val_loss, 0
        else:
            pr.bad_epochs += 1
        pr.epoch += 1
        pr.pos = 0
        pr.epoch_loss_sum = 0.0
        pr.epoch_steps = 0
        return record

    def evaluate(self) -> tuple[float, float]:
        """Validation loss and accuracy, each rank scoring a slice and the ranks summing."""
        from mpi4py import MPI

        x, y = self.data.x_val, self.data.y_val
        part = np.array_split(np.arange(len(y)), self.world)[self.rank]
        sums = np.zeros(3, dtype=np.float64)  # loss sum, correct, count
        for lo in range(0, len(part), EVAL_CHUNK):
            ids = part[lo:lo + EVAL_CHUNK]
            out = self.model.forward(x[ids], train=False)
            loss, _ = softmax_cross_entropy(out, y[ids], denom=1)
            sums += np.array([loss, np.count_nonzero(out.argmax(axis=1) == y[ids]), len(ids)])
        self.comm.Allreduce(MPI.IN_PLACE, sums, op=MPI.SUM)
        return float(sums[0] / sums[2]), float(sums[1] / sums[2])

    # ---- checkpoints ------------------------------------------------------------------------
    @property
    def checkpoint_dir(self) -> str:
        assert self.cfg.checkpoint_dir is not None, "checkpointing needs --checkpoint-dir"
        return self.cfg.checkpoint_dir

    def save_checkpoint(self) -> None:
        """All ranks give their RNG state; rank 0 writes (parameters are identical everywhere)."""
        self._saved_step = self.progress.step
        rng_states = self.comm.gather(self.model.get_rng_state(), root=0)
        # Compressor state: Q matrices are the same on every rank, residuals are each rank's.
        comp_local = self.comm.gather(self.sync.compressor.local_state(), root=0)
        # The epoch's loss sum is spread over ranks; keep its total so any world can resume it.
        loss_total = self.comm.allreduce(self.progress.epoch_loss_sum)
        if self.rank != 0:
            return
        pr = self.progress
        arrays = {"params": self.model.params}
        arrays.update({f"opt/{k}": np.asarray(v) for k, v in self.opt.state_dict().items()})
        arrays.update({f"scaler/{k}": np.asarray(v) for k, v in self.data.scaler.to_dict().items()})
        arrays.update({f"compress/shared/{k}": v
                       for k, v in self.sync.compressor.shared_state().items()})
        for r, local in enumerate(comp_local):
            arrays.update({f"compress/rank{r}/{k}": v for k, v in local.items()})
        meta = {
            "kind": "distnet-checkpoint", "spec": self.spec, "world_size": self.world,
            "n_classes": self.data.n_classes, "rng": rng_states,
            "progress": {**vars(pr), "epoch_loss_sum": loss_total},
            "seed": self.cfg.seed, "batch_size": self.cfg.batch_size,
            "compress": self.cfg.compress,
        }
        path = checkpoint.checkpoint_path(self.checkpoint_dir, pr.step)
        with self.observer.span("checkpoint", "checkpoint", {"step": pr.step}):
            checkpoint.save(path, arrays, meta)
            checkpoint.prune(self.checkpoint_dir, keep=3)

    def _resume(self) -> None:
        path = checkpoint.latest(self.checkpoint_dir)
        if path is None:
            raise UserError(f"--resume: no checkpoint in {self.cfg.checkpoint_dir}")
        arrays, meta = checkpoint.load(path)
        if meta.get("kind") != "distnet-checkpoint":
            raise UserError(f"{path} is not a distnet checkpoint")
        self.check_spec(meta.get("spec", {}), path)
        self.model.params[...] = arrays["params"]
        opt_state = {k[4:]: v for k, v in arrays.items() if k.startswith("opt/")}
        self.opt.load_state_dict({k: (v if v.ndim else v.item()) for k, v in opt_state.items()})
        rng = meta.get("rng") or []
        if self.rank < len(rng):
            self.model.set_rng_state(rng[self.rank])
        self._resume_compressor(arrays, meta, path)
        saved = meta.get("progress", {})
        missing = [f.name for f in fields(Progress) if f.name not in saved]
        if missing:
            raise UserError(f"{path}: checkpoint lacks progress fields {missing}")
        self.progress = Progress(**{f.name: saved[f.name] for f in fields(Progress)})
        self._saved_step = self.progress.step
        if self.rank != 0:
            self.progress.epoch_loss_sum = 0.0
        self.log(f"resumed from {path}: epoch {self.progress.epoch + 1}, "
                 f"position {self.progress.pos}, step {self.progress.step}")

    def _resume_compressor(self, arrays: dict[str, np.ndarray], meta: dict[str, Any],
                           path: str) -> None:
        """Restore the compressor's state bit for bit; from another world size, each rank gets
        an equal share of the saved residuals (their sum, what the run still owes, is kept)."""
        comp = self.sync.compressor
        if meta.get("compress", "none") != self.cfg.compress:
            self.log(f"resume: {path} was written with --compress {meta.get('compress', 'none')}"
                     f"; starting --compress {self.cfg.compress} afresh")
            return
        shared = {k[len("compress/shared/"):]: v for k, v in arrays.items()
                  if k.startswith("compress/shared/")}
        saved_world = int(meta.get("world_size", 0))
        if saved_world == self.world:
            mine = f"compress/rank{self.rank}/"
            local = {k[len(mine):]: v for k, v in arrays.items() if k.startswith(mine)}
        else:
            local = {}
            for r in range(saved_world):
                prefix = f"compress/rank{r}/"
                for k, v in arrays.items():
                    if k.startswith(prefix):
                        name = k[len(prefix):]
                        local[name] = local.get(name, 0) + v.astype(np.float64)
            local = {k: (v / self.world).astype(self.model.grads.dtype)
                     for k, v in local.items()}
        comp.load_state(shared, local)

    def check_spec(self, saved: dict[str, Any], path: str) -> None:
        if saved.get("n_out") is not None and self.spec["n_out"] > saved["n_out"]:
            raise UserError(f"{path}: labels out of range: the data has labels up to "
                            f"{self.spec['n_out'] - 1}, the checkpoint's model has "
                            f"{saved['n_out']} classes")
        for key, value in self.spec.items():
            if saved.get(key) != value:
                what = "feature count" if key == "n_in" else key
                raise UserError(f"{path}: checkpoint has {what} {saved.get(key)!r}, "
                                f"this run has {value!r}")

    def save_params(self, path: str) -> None:
        if self.rank == 0:
            checkpoint.save(path, {"params": self.model.params},
                            {"kind": "distnet-params", "spec": self.spec})

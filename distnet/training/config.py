"""Command-line configuration of a training run: one plain dataclass, one parser."""

from __future__ import annotations

import argparse
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from distnet.common.errors import UserError

OPTIMIZERS = ("sgd", "adam", "adadelta")
ACTIVATIONS = ("relu", "tanh", "sigmoid")
LR_SCHEDULES = ("constant", "step", "cosine")
DTYPES = ("float32", "float64")
FT_MODES = ("none", "ulfm", "restart")


@dataclass
class TrainConfig:
    epochs: int = 5
    batch_size: int = 64
    lr: float = 3e-3
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_schedule: str = "constant"
    hidden: str = "128,128"
    activation: str = "relu"
    dropout: float = 0.0
    seed: int = 0
    data: str | None = None
    samples: int = 48000
    val_fraction: float = 0.2
    dtype: str = "float32"
    allreduce: str = "native"
    bucket_mb: float = 0.0
    overlap: bool = True
    metrics: str | None = None
    save: str | None = None
    checkpoint_dir: str | None = None
    checkpoint_every: int = 0
    resume: bool = False
    early_stopping: int = 0
    trials: int = 0
    profile: bool = False
    max_steps: int = 0
    quiet: bool = False
    ft: str = "none"
    fault_plan: str | None = None
    inject: list[str] = field(default_factory=list)
    deadline_s: float = 0.0
    track_samples: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage on every rank and exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(message)


def build_parser(prog: str = "python -m distnet.train") -> argparse.ArgumentParser:
    d = TrainConfig()
    p = _Parser(prog=prog, description="Train a NumPy MLP data-parallel over MPI.")
    a = p.add_argument
    a("--epochs", type=int, default=d.epochs)
    a("--batch-size", type=int, default=d.batch_size, help="samples per rank per step")
    a("--lr", type=float, default=d.lr)
    a("--optimizer", default=d.optimizer, help="sgd, adam or adadelta")
    a("--momentum", type=float, default=d.momentum, help="SGD momentum")
    a("--weight-decay", type=float, default=d.weight_decay)
    a("--lr-schedule", default=d.lr_schedule, help="constant, step or cosine")
    a("--hidden", default=d.hidden, help="hidden layer sizes, e.g. 256,256")
    a("--activation", default=d.activation, help="relu, tanh or sigmoid")
    a("--dropout", type=float, default=d.dropout)
    a("--seed", type=int, default=d.seed)
    a("--data", default=d.data, help=".npz, .csv or MNIST idx file (default: embedded data)")
    a("--samples", type=int, default=d.samples, help="size of the embedded default dataset")
    a("--val-fraction", type=float, default=d.val_fraction)
    a("--dtype", default=d.dtype, help="float32 or float64")
    a("--allreduce", default=d.allreduce, help="gradient all-reduce algorithm (native, ring, ...)")
    a("--bucket-mb", type=float, default=d.bucket_mb,
      help="reduce gradients in buckets of this size while backward runs (0: one buffer)")
    a("--no-overlap", dest="overlap", action="store_false",
      help="with --bucket-mb, start reductions only after backward (for comparison)")
    a("--metrics", default=d.metrics, help="JSONL file written by rank 0")
    a("--save", default=d.save, help="write final parameters to this .npz")
    a("--checkpoint-dir", default=d.checkpoint_dir)
    a("--checkpoint-every", type=int, default=d.checkpoint_every,
      help="steps between checkpoints (0: at the end of every epoch)")
    a("--resume", action="store_true", help="continue from the latest checkpoint")
    a("--early-stopping", type=int, default=d.early_stopping, metavar="PATIENCE")
    a("--trials", type=int, default=d.trials, help="random hyper-parameter search trials")
    a("--profile", action="store_true", help="record per-step timings in the metrics file")
    a("--max-steps", type=int, default=d.max_steps, help="stop after this many steps (0: no cap)")
    a("--quiet", action="store_true")
    a("--ft", default=d.ft, help="fault tolerance: none, ulfm or restart")
    a("--fault-plan", default=d.fault_plan, help="JSON fault plan to inject (testing)")
    a("--inject", action="append", default=[], metavar="SPEC",
      help="inject one fault, e.g. crash:rank=2:step=5 (repeatable)")
    a("--deadline-s", type=float, default=d.deadline_s,
      help="collective deadline in seconds before a rank is declared failed (0: derived)")
    a("--track-samples", action="store_true",
      help="record the sample ids of every step in the metrics file (fault-test proof)")
    return p


def parse_args(argv: list[str] | None, parser: argparse.ArgumentParser | None = None,
               ) -> tuple[TrainConfig, argparse.Namespace]:
    """Parse and validate; every problem is a UserError naming the flag."""
    ns = (parser or build_parser()).parse_args(argv)
    known = set(TrainConfig.__dataclass_fields__)
    cfg = TrainConfig(**{k: v for k, v in vars(ns).items() if k in known})
    validate(cfg)
    return cfg, ns


def validate(cfg: TrainConfig) -> None:
    def need(ok: bool, msg: str) -> None:
        if not ok:
            raise UserError(msg)

    need(cfg.epochs >= 1, f"--epochs must be >= 1, got {cfg.epochs}")
    need(cfg.batch_size >= 1, f"--batch-size must be >= 1, got {cfg.batch_size}")
    need(cfg.lr > 0, f"--lr must be > 0, got {cfg.lr}")
    need(cfg.optimizer in OPTIMIZERS,
         f"unknown optimizer {cfg.optimizer!r} (known: {', '.join(OPTIMIZERS)})")
    need(cfg.activation in ACTIVATIONS,
         f"unknown activation {cfg.activation!r} (known: {', '.join(ACTIVATIONS)})")
    need(cfg.lr_schedule in LR_SCHEDULES,
         f"unknown lr schedule {cfg.lr_schedule!r} (known: {', '.join(LR_SCHEDULES)})")
    need(cfg.dtype in DTYPES, f"unknown dtype {cfg.dtype!r} (known: {', '.join(DTYPES)})")
    need(0.0 <= cfg.dropout < 1.0, f"--dropout must be in [0, 1), got {cfg.dropout}")
    need(0.0 < cfg.val_fraction < 1.0, f"--val-fraction must be in (0, 1), got {cfg.val_fraction}")
    need(cfg.samples >= 2, f"--samples must be >= 2, got {cfg.samples}")
    need(math.isfinite(cfg.bucket_mb) and cfg.bucket_mb >= 0,
         f"--bucket-mb must be a finite number >= 0, got {cfg.bucket_mb}")
    need(cfg.checkpoint_every >= 0, "--checkpoint-every must be >= 0")
    need(cfg.early_stopping >= 0, "--early-stopping must be >= 0")
    need(cfg.trials >= 0, "--trials must be >= 0")
    need(cfg.max_steps >= 0, "--max-steps must be >= 0")
    need(cfg.ft in FT_MODES, f"unknown --ft mode {cfg.ft!r} (known: {', '.join(FT_MODES)})")
    need(cfg.deadline_s >= 0, "--deadline-s must be >= 0")
    need(not (cfg.resume and not cfg.checkpoint_dir), "--resume needs --checkpoint-dir")
    from distnet.allreduce import get
    from distnet.nn.model import parse_hidden

    parse_hidden(cfg.hidden)  # raises a UserError naming the bad size
    get(cfg.allreduce)  # raises a UserError listing the known algorithms

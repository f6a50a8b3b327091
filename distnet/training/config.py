"""Configuration of a training run: one dataclass whose fields are the command-line flags.

Each field carries its default, help text and range (`distnet.common.cli.option`); the parser is
built from the fields and the generic range checks run on them, so a flag is written once. Name
lists come from where the things live (optimisers and schedules in nn/optim.py, activations in
nn/layers.py, all-reduce algorithms in the registry).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from distnet.common.cli import Parser, add_options, check_options, from_namespace, option
from distnet.common.errors import UserError
from distnet.compress import COMPRESSORS
from distnet.compress.powersgd import MAX_RANK
from distnet.nn.layers import ACTIVATIONS
from distnet.nn.model import DTYPES
from distnet.nn.optim import OPTIMIZERS, SCHEDULES

FT_MODES = ("none", "ulfm", "restart")
PROG = "python -m distnet.train"


@dataclass
class TrainConfig:
    # ---- optimisation
    epochs: int = option(5, "passes over the training data", low=1)
    batch_size: int = option(64, "samples per rank per step (the global batch is this x ranks)",
                             low=1)
    lr: float = option(3e-3, "learning rate", low=0, low_open=True)
    optimizer: str = option("adam", "optimiser", choices=OPTIMIZERS)
    momentum: float = option(0.9, "SGD momentum (0: plain SGD)", low=0, high=1, high_open=True)
    weight_decay: float = option(0.0, "L2 weight decay added to the gradient", low=0)
    lr_schedule: str = option("constant", "learning-rate schedule over epochs",
                              choices=SCHEDULES)
    # ---- model
    hidden: str = option("128,128", "hidden layer widths, comma-separated ('' for none)",
                         metavar="W,W,...")
    activation: str = option("relu", "hidden-layer activation", choices=tuple(ACTIVATIONS))
    dropout: float = option(0.0, "dropout probability after each hidden layer", low=0, high=1,
                            high_open=True)
    dtype: str = option("float32", "parameter and gradient dtype", choices=DTYPES)
    seed: int = option(0, "seed of data generation, split, initialisation and shuffling", low=0,
                       high=2**63 - 1)
    # ---- data
    data: str | None = option(None, ".npz, .csv or MNIST idx file (default: the embedded task)",
                              metavar="PATH")
    samples: int = option(48000, "samples of the embedded default task", low=2)
    val_fraction: float = option(0.2, "share of the data held out for validation", low=0,
                                 high=1, low_open=True, high_open=True)
    # ---- communication
    allreduce: str = option("native", "gradient all-reduce algorithm (see distnet/allreduce/; "
                            "unknown names list the known ones)", metavar="NAME")
    bucket_mb: float = option(0.0, "reduce gradients in buckets of this many MiB while backward "
                              "runs (0: one buffer after backward)", low=0)
    overlap: bool = option(True, "with --bucket-mb, start reductions only after backward "
                           "(for comparison)", negate="--no-overlap")
    compress: str = option("none", "gradient compression on the wire (distnet/compress/): "
                           "fp16/bf16 halve the bytes, powersgd sends rank-r factors",
                           choices=tuple(COMPRESSORS))
    powersgd_rank: int = option(4, "rank r of PowerSGD's factors", low=1, high=MAX_RANK)
    powersgd_start_step: int = option(0, "plain all-reduce for this many steps before PowerSGD "
                                      "starts (as PyTorch DDP's start_powerSGD_iter)", low=0)
    # ---- outputs
    metrics: str | None = option(None, "JSONL file of epoch/step/event records, written by "
                                 "rank 0", metavar="PATH")
    save: str | None = option(None, "write the final parameters to this .npz", metavar="PATH")
    checkpoint_dir: str | None = option(None, "folder of atomic checkpoints (the newest 3 are "
                                        "kept)", metavar="DIR")
    checkpoint_every: int = option(0, "steps between checkpoints (0: at the end of every epoch)",
                                   low=0)
    resume: bool = option(False, "continue from the newest checkpoint in --checkpoint-dir")
    early_stopping: int = option(0, "stop after this many epochs without a better val_loss "
                                 "(0: never)", low=0, metavar="PATIENCE")
    trials: int = option(0, "random hyper-parameter search with this many trials (0: train "
                         "once)", low=0)
    profile: bool = option(False, "record per-step timings in the metrics file and print the "
                           "compute/communication breakdown")
    max_steps: int = option(0, "stop after this many optimiser steps (0: no cap)", low=0)
    quiet: bool = option(False, "print nothing but errors")
    # ---- fault tolerance
    ft: str = option("none", "fault tolerance: none (stop on a fault), ulfm (shrink and "
                     "continue), restart (resume from the latest checkpoint)", choices=FT_MODES)
    fault_plan: str | None = option(None, "JSON fault plan to inject (testing)", metavar="PATH")
    inject: list[str] = option(default_factory=list, help="inject one fault, e.g. "
                               "crash:rank=2:step=5 (repeatable)", metavar="SPEC", repeat=True)
    deadline_s: float = option(0.0, "seconds a collective may take before a rank is declared "
                               "failed (0: derived from measured steps)", low=0)
    track_samples: bool = option(False, "record the sample ids of every step in the metrics "
                                 "file (proof for the fault tests)")
    # ---- watching the run (distnet/observe/)
    trace: str | None = option(None, "write a Chrome trace-event timeline of every rank "
                               "(Perfetto, chrome://tracing) to this JSON file", metavar="PATH")
    trace_detail: bool = option(False, "with --trace, also each all-reduce's schedule steps")
    trace_steps: int = option(100, "with --trace, keep the last this many steps per rank (a "
                              "ring buffer bounds the file)", low=1, high=1_000_000)
    trace_plot: str | None = option(None, "draw the trace's last steps, one lane per rank, "
                                    "into this PNG", metavar="PATH.png")
    stall_warn_s: float = option(60.0, "rank 0 names the ranks a reduction has waited this many "
                                 "seconds for, and repeats every as many seconds (0: off; "
                                 "never kills)", low=0)


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = Parser(prog=prog, description="Train a NumPy MLP data-parallel over MPI.")
    add_options(parser, TrainConfig)
    return parser


def parse_args(argv: list[str] | None, parser: argparse.ArgumentParser | None = None,
               ) -> tuple[TrainConfig, argparse.Namespace]:
    """Parse and validate; every problem is a UserError naming the flag."""
    ns = (parser or build_parser()).parse_args(argv)
    cfg = from_namespace(TrainConfig, ns)
    validate(cfg)
    return cfg, ns


def validate(cfg: TrainConfig) -> None:
    """Ranges and choices from the fields, then what no single field can say."""
    check_options(cfg)
    if cfg.resume and not cfg.checkpoint_dir:
        raise UserError("--resume needs --checkpoint-dir")
    from distnet.allreduce import ALGORITHMS, NOT_REVOCABLE, get
    from distnet.nn.model import parse_hidden

    if cfg.trace_plot is not None and not cfg.trace_plot.endswith(".png"):
        raise UserError(f"--trace-plot needs a path ending in .png, got {cfg.trace_plot!r}")
    if cfg.trace_plot is not None:
        from distnet.common.plotting import pyplot

        pyplot()  # a missing matplotlib is refused before training, not after
    parse_hidden(cfg.hidden)  # raises a UserError naming the bad size
    get(cfg.allreduce)  # raises a UserError listing the known algorithms
    if cfg.ft == "ulfm" and cfg.allreduce in NOT_REVOCABLE:
        # Their ranks wait on flags in shared memory, outside MPI: a revoke cannot wake them,
        # so a failed peer would end the job at the shrink limit instead of being recovered.
        usable = ", ".join(sorted(set(ALGORITHMS) - NOT_REVOCABLE))
        raise UserError(f"--allreduce {cfg.allreduce} cannot recover under --ft ulfm (its "
                        f"shared-memory waits are not revocable); use one of {usable}")

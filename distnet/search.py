"""Random hyper-parameter search (seed 003): sample lr, hidden sizes and batch size, keep the best.

    mpirun -n 4 python -m distnet.search --trials 8 --epochs 2

Every rank draws the same samples from the same seeded generator, so all ranks run the same
trials together; each trial is an ordinary data-parallel training run.
"""

from __future__ import annotations

import sys

from distnet.common.threads import limit_blas_threads

limit_blas_threads()

from dataclasses import replace  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from distnet.training.config import TrainConfig  # noqa: E402

HIDDEN_CHOICES = ("64", "128", "256", "64,64", "128,128", "256,128", "256,256")
BATCH_CHOICES = (16, 32, 64, 128)


def sample_trial(rng: np.random.Generator, base: TrainConfig) -> TrainConfig:
    """One point of the search space; lr is log-uniform because its effect is multiplicative."""
    lo, hi = (1e-4, 1e-2) if base.optimizer != "sgd" else (1e-3, 3e-1)
    lr = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    hidden = HIDDEN_CHOICES[int(rng.integers(len(HIDDEN_CHOICES)))]
    batch = BATCH_CHOICES[int(rng.integers(len(BATCH_CHOICES)))]
    # --metrics gets every trial's records, each trial ending in its "done" record (the file is
    # a log that runs append to); --save/--checkpoint-dir/--resume are refused up front
    # (training/guards.py): a trial is a fresh run.
    return replace(base, lr=lr, hidden=hidden, batch_size=batch, trials=0, quiet=True,
                   save=None, checkpoint_dir=None, resume=False)


def random_search(comm: Any, base: TrainConfig) -> dict[str, Any]:
    from distnet.training.trainer import Trainer

    rng = np.random.default_rng(base.seed)
    say = print if comm.Get_rank() == 0 else (lambda *a, **k: None)
    best: dict[str, Any] | None = None
    for trial in range(base.trials):
        cfg = sample_trial(rng, base)
        result = Trainer(comm, cfg).fit()
        row = {"trial": trial, "lr": cfg.lr, "hidden": cfg.hidden, "batch_size": cfg.batch_size,
               "val_acc": result["val_acc"], "val_loss": result["val_loss"]}
        say(f"trial {trial + 1}/{base.trials}  lr {cfg.lr:.2e}  hidden {cfg.hidden:>8}  "
            f"batch {cfg.batch_size:>4}  val_acc {100 * row['val_acc']:6.2f}%")
        if best is None or row["val_acc"] > best["val_acc"]:
            best = row
    assert best is not None
    say(f"best: val_acc {100 * best['val_acc']:.2f}% with lr {best['lr']:.2e}, "
        f"hidden {best['hidden']}, batch {best['batch_size']}")
    return best


def main(argv: list[str] | None = None) -> int:
    from distnet.common.runner import agree, run

    def body(comm: Any) -> int:
        from distnet.train import parse_quietly
        from distnet.training import guards

        cfg = agree(comm, lambda: parse_quietly(comm, argv))
        cfg = replace(cfg, trials=cfg.trials or 8)
        agree(comm, lambda: guards.before_run(cfg, comm.Get_rank()))
        random_search(comm, cfg)
        return 0

    return run(body, "python -m distnet.search")


if __name__ == "__main__":
    sys.exit(main())

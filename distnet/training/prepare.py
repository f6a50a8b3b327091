"""Everything a run needs before its first step: data, normalisation, model, optimiser.

Every rank runs the same deterministic code on the same inputs, so every rank builds identical
parameters and identical data splits without any communication.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from distnet.common.errors import UserError
from distnet.common.memory import check_fits
from distnet.data.dataset import Dataset, MinMax, load, make_default, train_val_split
from distnet.nn.model import Sequential, build_mlp, parse_hidden
from distnet.nn.optim import make_optimizer
from distnet.training.config import TrainConfig


@dataclass
class Prepared:
    """Normalised splits in the training dtype plus what a checkpoint must remember about them."""

    x_train: np.ndarray  # (N, D)
    y_train: np.ndarray  # (N,)
    x_val: np.ndarray
    y_val: np.ndarray
    n_classes: int
    scaler: MinMax


def prepare_data(cfg: TrainConfig) -> Prepared:
    ds: Dataset = load(cfg.data) if cfg.data else make_default(seed=cfg.seed, n_samples=cfg.samples)
    train, val = train_val_split(ds, val_fraction=cfg.val_fraction, seed=cfg.seed)
    if len(train.y) == 0 or len(val.y) == 0:
        raise UserError(f"dataset of {len(ds.y)} samples is too small to split")
    scaler = MinMax.fit(train.x)  # fitted on the training split only, never on validation
    dtype = np.dtype(cfg.dtype)
    return Prepared(
        scaler.transform(train.x, dtype), train.y, scaler.transform(val.x, dtype), val.y,
        ds.n_classes, scaler,
    )


def build_model(cfg: TrainConfig, n_in: int, n_out: int, rank: int) -> Sequential:
    sizes = [n_in, *parse_hidden(cfg.hidden), n_out]
    n_params = sum((a + 1) * b for a, b in zip(sizes, sizes[1:], strict=False))
    # parameters, gradients, up to two optimiser moments, the bucketing and checkpoint copies
    check_fits(f"a model of {n_params:,} parameters ({'-'.join(map(str, sizes))})",
               6 * n_params * np.dtype(cfg.dtype).itemsize)
    # Parameters from cfg.seed (identical on every rank); dropout masks from a per-rank stream.
    return build_mlp(
        n_in, parse_hidden(cfg.hidden), n_out, activation=cfg.activation, dropout=cfg.dropout,
        dtype=np.dtype(cfg.dtype), seed=cfg.seed, dropout_seed=cfg.seed * 100_003 + rank + 1,
    )


def build_optimizer(cfg: TrainConfig, model: Sequential) -> Any:
    return make_optimizer(cfg.optimizer, model.params, model.grads, lr=cfg.lr,
                          momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def model_spec(cfg: TrainConfig, n_in: int, n_out: int) -> dict[str, Any]:
    """What must match for parameters to be loadable: saved with every checkpoint."""
    return {"n_in": n_in, "hidden": parse_hidden(cfg.hidden), "n_out": n_out,
            "activation": cfg.activation, "dtype": cfg.dtype, "optimizer": cfg.optimizer}

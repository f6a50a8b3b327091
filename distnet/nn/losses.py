"""Losses: each returns (loss, dloss/dout) where loss = (sum over the samples) / denom.

Why a sum over an explicit `denom` rather than a mean: in data parallelism every rank passes the
GLOBAL batch size as denom and the trainer SUM-all-reduces the gradients; the result is then
exactly the 1-rank gradient of the whole batch, even when the last batch splits unevenly across
ranks or a rank gets no samples at all (empty batch: loss 0.0 and a zero-size gradient).
`denom` defaults to the local batch size, i.e. the ordinary mean.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from distnet.common.errors import UserError
from distnet.common.names import lookup

LossFn = Callable[..., tuple[float, np.ndarray]]


def _denom(n_samples: int, denom: float | None) -> float:
    if denom is None:
        return float(max(n_samples, 1))
    if denom <= 0:
        raise UserError(f"loss denominator must be positive, got {denom}")
    return float(denom)


def softmax_cross_entropy(logits: np.ndarray, y: np.ndarray,
                          denom: float | None = None) -> tuple[float, np.ndarray]:
    """Cross-entropy of softmax(logits) (B, C) against integer class labels y (B,)."""
    n = logits.shape[0]
    d = _denom(n, denom)
    if n == 0:
        return 0.0, np.zeros_like(logits)
    rows = np.arange(n)
    # Subtracting the row max keeps exp() from overflowing; the softmax is unchanged.
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    sum_exp = exp.sum(axis=1)
    # -log softmax(z)_y = log sum exp(z) - z_y
    loss = float(np.sum(np.log(sum_exp) - shifted[rows, y], dtype=np.float64)) / d
    # d/dz = softmax(z) - onehot(y), divided by denom
    dlogits = exp
    dlogits /= sum_exp[:, None]
    dlogits[rows, y] -= 1
    dlogits /= d
    return loss, dlogits


def binary_cross_entropy(logits: np.ndarray, y: np.ndarray,
                         denom: float | None = None) -> tuple[float, np.ndarray]:
    """Binary cross-entropy of sigmoid(logits) against targets y in [0, 1], same shape as logits.

    Takes LOGITS, not probabilities (so the model ends in a plain Dense layer): this is the
    numerically stable form, log(1 + e^-|z|) + max(z, 0) - z y, which never takes log(0).
    Per-sample losses are summed over all outputs of the sample.
    """
    n = logits.shape[0]
    d = _denom(n, denom)
    if n == 0:
        return 0.0, np.zeros_like(logits)
    y = np.asarray(y, dtype=logits.dtype).reshape(logits.shape)
    per_elem = np.maximum(logits, 0) - logits * y + np.log1p(np.exp(-np.abs(logits)))
    loss = float(np.sum(per_elem, dtype=np.float64)) / d
    # d/dz = sigmoid(z) - y; sigmoid via tanh never overflows
    dlogits = 0.5 * (1 + np.tanh(0.5 * logits)) - y
    dlogits /= d
    return loss, dlogits.astype(logits.dtype, copy=False)


def mean_squared_error(out: np.ndarray, target: np.ndarray,
                       denom: float | None = None) -> tuple[float, np.ndarray]:
    """Squared error summed over each sample's outputs, then over samples, divided by denom.

    So with the default denom this is the mean over samples of ||out - target||^2 (not divided by
    the number of outputs as well).
    """
    n = out.shape[0]
    d = _denom(n, denom)
    if n == 0:
        return 0.0, np.zeros_like(out)
    diff = out - np.asarray(target, dtype=out.dtype).reshape(out.shape)
    loss = float(np.sum(diff * diff, dtype=np.float64)) / d
    diff *= 2 / d
    return loss, diff


def count_correct(logits: np.ndarray, y: np.ndarray) -> int:
    """How many argmax predictions equal the integer labels (summable across ranks)."""
    if logits.shape[0] == 0:
        return 0
    return int(np.count_nonzero(logits.argmax(axis=1) == y))


def accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    """Fraction of argmax predictions equal to the integer labels; 0.0 for an empty batch."""
    n = logits.shape[0]
    return count_correct(logits, y) / n if n else 0.0


LOSSES: dict[str, LossFn] = {
    "cross_entropy": softmax_cross_entropy,
    "binary_cross_entropy": binary_cross_entropy,
    "mse": mean_squared_error,
}


def get_loss(name: str) -> LossFn:
    """The loss called `name`; unknown names are a UserError listing the known ones."""
    return lookup(LOSSES, name, "loss")

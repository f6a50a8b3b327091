"""Datasets: the embedded default, file loading with validation, the split, min-max scaling.

Every rank calls these with the same arguments and gets bitwise-identical arrays, so nothing
here communicates. The normaliser is fitted on the training split only: fitting it on all data
would leak the validation set's range into training.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from distnet.common.errors import UserError
from distnet.common.memory import check_fits
from distnet.data import files as loaders
from distnet.data.synthetic import N_FEATURES, default_arrays

SUPPORTED = ".npz, .csv, *-images-idx3-ubyte[.gz]"
# Labels are class ids 0..C-1 and the model gets C outputs. A label far above the others (a
# typo, a sample id in the label column) would silently build a huge output layer, so the ids
# must be dense: beyond SMALL_CLASS_COUNT classes, at least half of 0..C-1 must occur.
MAX_LABEL = 2**31 - 1
SMALL_CLASS_COUNT = 64


@dataclass(frozen=True)
class Dataset:
    x: np.ndarray  # (N, D) float32, or float64 if the file stored float64
    y: np.ndarray  # (N,) int64, every label in [0, n_classes)
    n_classes: int


def make_default(seed: int = 0, n_samples: int = 48000) -> Dataset:
    """The embedded 10-class, 48-feature task (data/synthetic.py), from the seed."""
    if n_samples < 1:
        raise UserError(f"the default dataset needs at least 1 sample, got {n_samples}")
    # x in float64 while generating, its float32 copy, the latent and noise temporaries
    check_fits(f"--samples {n_samples}", n_samples * N_FEATURES * 8 * 4)
    x, y = default_arrays(seed=seed, n_samples=n_samples)
    return Dataset(x, y, int(y.max()) + 1)


def load(path: str) -> Dataset:
    """Read a dataset file, choosing the format by its name; any problem is one UserError line."""
    if not os.path.exists(path):
        raise UserError(f"{path}: no such file")
    if os.path.isdir(path):
        raise UserError(f"{path}: is a directory, expected a dataset file ({SUPPORTED})")
    name = os.path.basename(path).lower()
    if name.endswith(".npz"):
        x, y = loaders.read_npz(path)
    elif name.endswith(".csv"):
        x, y = loaders.read_csv(path)
    elif loaders.is_idx_images(path):
        x, y = loaders.read_idx_pair(path)
    else:
        raise UserError(f"{path}: unsupported file type (supported: {SUPPORTED})")
    return checked(x, y, path)


def checked(x: np.ndarray, y: np.ndarray, source: str) -> Dataset:
    """Validate raw arrays into a Dataset: numeric finite 2-D features, non-negative int labels."""
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim == 0 or len(x) == 0:
        raise UserError(f"{source}: empty dataset")
    if not _is_real(x.dtype):
        raise UserError(f"{source}: features are not numeric (dtype {x.dtype})")
    if x.ndim == 1:
        raise UserError(f"{source}: features must be 2-D (samples, features), got shape {x.shape}")
    x = x.reshape(len(x), -1)  # images (N, H, W) become rows of pixels
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise UserError(f"{source}: labels must be 1-D, got shape {y.shape}")
    if len(x) != len(y):
        raise UserError(f"{source}: {len(x)} feature rows but {len(y)} labels")
    if x.shape[1] == 0:
        raise UserError(f"{source}: empty dataset (no feature columns)")
    y = _integer_labels(y, source)
    if y.min() < 0:
        raise UserError(f"{source}: negative label {int(y.min())} (labels must be 0, 1, 2, ...)")
    _check_dense(y, source)
    x = x.astype(np.float64 if x.dtype == np.float64 else np.float32)
    bad = ~np.isfinite(x)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise UserError(f"{source}: NaN or inf in features (first at sample {row}, feature {col})")
    return Dataset(x, y, int(y.max()) + 1)


def _is_real(dtype: np.dtype) -> bool:
    return bool(np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating))


def _integer_labels(y: np.ndarray, source: str) -> np.ndarray:
    """int64 labels; values past MAX_LABEL are named as too large (a cast would wrap them)."""
    if np.issubdtype(y.dtype, np.integer):
        if len(y) and int(y.max()) > MAX_LABEL:  # int() of uint64 stays exact
            i = int(np.argmax(y))
            raise UserError(f"{source}: label {int(y[i])} of sample {i} is too large "
                            f"(labels are class ids 0, 1, 2, ... up to {MAX_LABEL})")
        return y.astype(np.int64)
    # csv stores labels as floats; 3.0 is fine, 3.5 or NaN is not.
    if not np.issubdtype(y.dtype, np.floating):
        raise UserError(f"{source}: labels are not integers (dtype {y.dtype})")
    with np.errstate(invalid="ignore"):
        whole = np.isfinite(y) & (y == np.round(y))
    if not whole.all():
        i = int(np.argmin(whole))
        raise UserError(f"{source}: labels are not integers (sample {i} has label {y[i]!r})")
    if len(y) and float(y.max()) > MAX_LABEL:
        i = int(np.argmax(y))
        raise UserError(f"{source}: label {float(y[i]):g} of sample {i} is too large "
                        f"(labels are class ids 0, 1, 2, ... up to {MAX_LABEL})")
    return y.astype(np.int64)


def _check_dense(y: np.ndarray, source: str) -> None:
    n_classes = int(y.max()) + 1
    if n_classes <= SMALL_CLASS_COUNT:
        return
    used = len(np.unique(y))
    if 2 * used < n_classes:
        raise UserError(f"{source}: labels go up to {n_classes - 1} but only {used} distinct "
                        f"values occur: that would build a model with {n_classes} output "
                        f"classes; renumber the labels as 0..{used - 1}")


def fingerprint(ds: Dataset) -> str:
    """SHA-256 of the samples, labels and class count: ranks can compare it to prove they agree."""
    h = hashlib.sha256()
    for a in (ds.x, ds.y):
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    h.update(str(ds.n_classes).encode())
    return h.hexdigest()


def validate_labels(y: np.ndarray, n_classes: int) -> None:
    """Refuse labels a model with n_classes outputs cannot predict (e.g. one from a checkpoint)."""
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= n_classes):
        raise UserError(f"labels out of range: data has labels {int(y.min())}..{int(y.max())} "
                        f"but the model has {n_classes} classes (0..{n_classes - 1})")


def train_val_split(ds: Dataset, val_fraction: float = 0.2, seed: int = 0
                    ) -> tuple[Dataset, Dataset]:
    """A seeded shuffle split; both parts keep the full n_classes and are never empty."""
    n = len(ds.y)
    if not 0.0 < val_fraction < 1.0:
        raise UserError(f"validation fraction must be in (0, 1), got {val_fraction}")
    if n < 2:
        raise UserError(f"dataset of {n} sample(s) is too small to split into train and validation")
    n_val = min(n - 1, max(1, round(n * val_fraction)))
    perm = np.random.default_rng([seed, 2]).permutation(n)
    val_idx, train_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    # Sorted indices keep the gather cache-friendly; the epoch permutation shuffles later anyway.
    return (Dataset(ds.x[train_idx], ds.y[train_idx], ds.n_classes),
            Dataset(ds.x[val_idx], ds.y[val_idx], ds.n_classes))


@dataclass(frozen=True)
class MinMax:
    """Per-feature min-max scaling to [0, 1] of the data it was fitted on."""

    lo: np.ndarray  # (D,) float64
    hi: np.ndarray  # (D,) float64

    @staticmethod
    def fit(x: np.ndarray) -> MinMax:
        if x.ndim != 2 or len(x) == 0:
            raise UserError(f"cannot fit a normaliser on data of shape {x.shape}")
        return MinMax(x.min(axis=0).astype(np.float64), x.max(axis=0).astype(np.float64))

    def transform(self, x: np.ndarray, dtype: Any = np.float32) -> np.ndarray:
        """(x - lo) / (hi - lo) in dtype; constant columns map to 0.

        Values outside the fitted range (validation data) may fall outside [0, 1]; they are
        kept, not clipped, so the model sees them as they are.
        """
        if x.ndim != 2 or x.shape[1] != len(self.lo):
            raise UserError(f"data has {x.shape[1] if x.ndim == 2 else x.shape} features but the "
                            f"normaliser was fitted on {len(self.lo)}")
        span = self.hi - self.lo
        span = np.where(span > 0, span, 1.0)
        return ((x - self.lo) / span).astype(dtype)

    def to_dict(self) -> dict[str, list[float]]:
        """JSON-ready lists; float64 survives the round trip through repr exactly."""
        return {"lo": self.lo.tolist(), "hi": self.hi.tolist()}

    @staticmethod
    def from_dict(d: dict[str, Any]) -> MinMax:
        try:
            lo = np.asarray(d["lo"], dtype=np.float64).reshape(-1)
            hi = np.asarray(d["hi"], dtype=np.float64).reshape(-1)
        except (KeyError, TypeError, ValueError):
            raise UserError("normaliser state must have numeric 'lo' and 'hi' lists") from None
        if lo.shape != hi.shape:
            raise UserError(f"normaliser state has {len(lo)} minima but {len(hi)} maxima")
        return MinMax(lo, hi)

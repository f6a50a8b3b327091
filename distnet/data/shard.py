"""Which samples each rank trains on: position-based sharding of one global permutation.

Every rank computes the same permutation of the training set for an epoch (it depends on the
seed and the epoch only, never on the world size). A step takes the next
`batch_per_rank * world` entries from position `pos` and splits them into contiguous parts, one
per rank. Progress is therefore just (epoch, pos): resuming, or continuing with a different
number of ranks after a failure, reshards the remaining samples and still visits every sample
exactly once per epoch.
"""

from __future__ import annotations

import numpy as np

from distnet.common.errors import UserError


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The seeded order of the n training samples in this epoch, identical on every rank."""
    if n < 0 or seed < 0 or epoch < 0:
        raise UserError(f"epoch_permutation needs n, seed, epoch >= 0, got {n}, {seed}, {epoch}")
    # A (seed, epoch) seed sequence gives independent streams without seed arithmetic collisions.
    return np.random.default_rng([seed, epoch, 3]).permutation(n)


def global_batch(perm: np.ndarray, pos: int, batch_per_rank: int, world: int) -> np.ndarray:
    """Sample indices of the global batch at position pos; shorter at the end of the epoch."""
    _check(batch_per_rank, world)
    if not 0 <= pos <= len(perm):
        raise UserError(f"batch position {pos} is outside the epoch of {len(perm)} samples")
    return perm[pos : pos + batch_per_rank * world]


def rank_part(batch_idx: np.ndarray, rank: int, world: int) -> np.ndarray:
    """Rank r's contiguous share of a global batch, sizes as np.array_split gives them.

    With a short last batch some ranks get 0 samples; they must still join the gradient
    all-reduce (with a zero gradient), and the loss must be divided by the global batch size,
    not the local one, so that unequal parts still give the exact mean gradient.
    """
    _check(1, world)
    if not 0 <= rank < world:
        raise UserError(f"rank {rank} is outside a world of {world}")
    base, extra = divmod(len(batch_idx), world)
    start = rank * base + min(rank, extra)
    return batch_idx[start : start + base + (1 if rank < extra else 0)]


def steps_per_epoch(n: int, batch_per_rank: int, world: int) -> int:
    """Number of global batches in an epoch of n samples: ceil(n / (batch_per_rank * world))."""
    _check(batch_per_rank, world)
    return -(-n // (batch_per_rank * world))


def _check(batch_per_rank: int, world: int) -> None:
    if batch_per_rank < 1:
        raise UserError(f"batch size per rank must be >= 1, got {batch_per_rank}")
    if world < 1:
        raise UserError(f"world size must be >= 1, got {world}")

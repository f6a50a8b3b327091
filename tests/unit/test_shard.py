"""Sharding: every sample exactly once per epoch, for any world size, even if it changes."""

from __future__ import annotations

import numpy as np
import pytest

from distnet.common.errors import UserError
from distnet.data.shard import epoch_permutation, global_batch, rank_part, steps_per_epoch


def run_epoch(perm: np.ndarray, pos: int, batch: int, world: int,
              stop_after_steps: int | None = None) -> tuple[list[np.ndarray], int]:
    """Every rank's part of every step from pos; returns the parts and the position reached."""
    parts, steps = [], 0
    while pos < len(perm) and (stop_after_steps is None or steps < stop_after_steps):
        g = global_batch(perm, pos, batch, world)
        assert len(g) > 0
        parts += [rank_part(g, r, world) for r in range(world)]
        pos += len(g)
        steps += 1
    return parts, pos


def test_permutation_is_seeded_and_per_epoch() -> None:
    a = epoch_permutation(1000, seed=7, epoch=0)
    assert np.array_equal(a, epoch_permutation(1000, seed=7, epoch=0))
    assert sorted(a.tolist()) == list(range(1000))
    assert not np.array_equal(a, epoch_permutation(1000, seed=7, epoch=1))
    assert not np.array_equal(a, epoch_permutation(1000, seed=8, epoch=0))


@pytest.mark.parametrize("n", [1, 7, 64, 97, 500])
@pytest.mark.parametrize("batch", [1, 3, 16])
def test_every_sample_exactly_once_for_every_world(n: int, batch: int) -> None:
    perm = epoch_permutation(n, seed=1, epoch=2)
    for world in range(1, 9):
        parts, pos = run_epoch(perm, 0, batch, world)
        assert pos == n
        assert np.array_equal(np.concatenate(parts), perm)  # in order, each exactly once
        assert len(parts) == world * steps_per_epoch(n, batch, world)
        # Full batches give every rank exactly `batch`; a short one is split near-equally.
        for step in range(len(parts) // world):
            sizes = [len(p) for p in parts[step * world : (step + 1) * world]]
            assert max(sizes) - min(sizes) <= 1 and max(sizes) <= batch


@pytest.mark.parametrize("n, batch", [(101, 4), (64, 8), (37, 1)])
def test_world_change_mid_epoch_reshards_the_rest(n: int, batch: int) -> None:
    perm = epoch_permutation(n, seed=3, epoch=0)
    for before in range(1, 9):
        for after in range(1, 9):
            head, pos = run_epoch(perm, 0, batch, before, stop_after_steps=2)
            tail, end = run_epoch(perm, pos, batch, after)
            assert end == n
            assert np.array_equal(np.concatenate(head + tail), perm)


def test_rank_part_matches_array_split() -> None:
    idx = np.arange(23)
    for world in range(1, 30):
        expected = np.array_split(idx, world)
        for r in range(world):
            assert np.array_equal(rank_part(idx, r, world), expected[r])


def test_short_last_batch_leaves_some_ranks_empty() -> None:
    perm = epoch_permutation(10, seed=0, epoch=0)
    g = global_batch(perm, 8, batch_per_rank=4, world=4)
    assert len(g) == 2
    assert [len(rank_part(g, r, 4)) for r in range(4)] == [1, 1, 0, 0]


def test_steps_per_epoch() -> None:
    assert steps_per_epoch(48000 * 4 // 5, 64, 8) == 75
    assert steps_per_epoch(10, 4, 4) == 1
    assert steps_per_epoch(17, 4, 4) == 2
    assert steps_per_epoch(0, 4, 4) == 0


def test_bad_arguments() -> None:
    perm = epoch_permutation(10, seed=0, epoch=0)
    with pytest.raises(UserError):
        global_batch(perm, 0, 0, 2)
    with pytest.raises(UserError):
        global_batch(perm, 11, 1, 2)
    with pytest.raises(UserError):
        rank_part(perm, 2, 2)
    with pytest.raises(UserError):
        steps_per_epoch(10, 1, 0)
